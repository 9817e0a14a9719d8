"""What happened in a run, and what is kept of it: the report (``report``), what each partner got
(``ledger``), the run history (``history``: kept reports, split in ``parts``, named by ``names``, checked on
the way back by ``validation``, kept by ``recording``) and the contact sheet (``contact_sheet``).

May import: ``catalog``, ``storage`` (the contact sheet signs thumbnails) and the ground floor.
"""
