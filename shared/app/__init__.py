"""What runs the engine: the parts built from settings (``factory``), the Functions triggers' operations
(``jobs``), the operator CLI (``cli``, ``runs_cli``, ``output``), its checks (``doctor``), and resubmitting
what kept runs left undone (``resubmit``: the CLI's ``runs resubmit`` and the HTTP function's).

May import: everything below. Nothing imports it but the triggers (``functions/``) and ``python -m shared``.
"""
