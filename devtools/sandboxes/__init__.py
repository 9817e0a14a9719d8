"""Local partner sandboxes: real HTTP servers that enforce Wallie's and TRAEDE's documented contracts.

Tests, the local demo and the benchmark talk to these instead of mocks, so the real clients (keep-alive,
retries, error mapping) are exercised end to end. Faults are injected through `.faults` or, from another
process, through `POST /_sandbox/faults`. Run both from a shell with `python -m devtools.sandboxes`.
"""

from .base import Faults, Sandbox
from .traede import TraedeSandbox
from .wallie import WallieSandbox

__all__ = ["Faults", "Sandbox", "TraedeSandbox", "WallieSandbox"]
