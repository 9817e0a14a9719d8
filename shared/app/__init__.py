"""What runs the engine: the parts built from settings (``factory``), the Functions triggers' operations
(``jobs``), the operator CLI (``cli``, ``runs_cli``, ``output``) and its checks (``doctor``).

May import: everything below. Nothing imports it but the triggers (``functions/``) and ``python -m shared``.
"""
