"""``python -m shared``: the operator CLI."""
import sys

from .app.cli import main

sys.exit(main())
