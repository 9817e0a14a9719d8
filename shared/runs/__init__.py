"""What happened in a run, and what is kept of it: the report (``report``), what each partner got
(``ledger``), the run history (``history``: kept reports, split in ``parts``, named by ``names``, checked on
the way back by ``validation``, kept by ``recording``; the newest run's pointer ``pointer``), the contact sheet
(``contact_sheet``), and what a resubmit reads: what a kept run left undone (``undone``, by the engine's words
for it in ``causes``) and which run resubmitted which (``links``).

May import: ``catalog``, ``storage`` (the contact sheet signs thumbnails) and the ground floor.
"""
