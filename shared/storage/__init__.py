"""The images account: its clients, built in one place with one retry policy (``clients``), and the read-only,
blob-scoped, time-limited SAS URLs the partners download from (``sas``).

May import: ``config`` and the ground floor.
"""
