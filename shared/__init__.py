"""Product image sync: plain Python shared by the Functions triggers, the CLI, the tests and the benchmark.

Never imports ``azure.functions``; reads settings only through ``config.settings.Settings.from_env``.

The package is built in floors; each sub-package imports only from the floors below it (a test,
``tests/test_architecture.py``, keeps it so), and its ``__init__`` says what it owns:

    app            factory, jobs (what the triggers run), cli, runs_cli, doctor
    coordination   the state container, pending marks, locks and fences, the product queue, shards
    engine         the sync engine, each partner's lane, stopping, progress
    runs           the report, the ledger, the run history, the contact sheet
    partners       the one HTTP path, the Wallie and TRAEDE clients, their payloads
    storage        the images account's clients, SAS signing
    config         the settings
    catalog        the layout, the listing, what a blob is, partner codes
    ground floor   domain (Partner, Outcome), errors, redact

See ``docs/architecture.md`` for the data path.
"""
