"""The two partners: the one HTTP path (``http``: deadlines, retries, what an unknown outcome is), each
partner's client (``wallie``, ``traede``) and what each receives for our images (``payloads``).

May import: ``catalog``, ``config`` and the ground floor. Never the engine or the run history.
"""
