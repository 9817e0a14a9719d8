"""What the CLI prints and writes: its exit codes, text made safe for a terminal, output files checked
before the work starts.
"""
from __future__ import annotations

import os

EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG = 0, 1, 2
EXIT_BUSY = 75  # sysexits' EX_TEMPFAIL: another full sync held on for longer than --wait; try again later


def printable(text: str) -> str:
    """A line for a terminal: control characters from a partner's answer or a blob name are shown escaped
    (``\x1b``), never sent to the operator's terminal as escape sequences."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def path_problem(option: str, path: str | None, example: str = "run.json") -> str | None:
    """An output file (``--report``, ``-o``) must be writable before the work starts: it is written after."""
    if not path:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{option} {path}: is a folder; expected a file name, e.g. {os.path.join(path, example)}"
    if not os.path.isdir(folder):
        return f"{option} {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"{option} {path}: not writable by this user"
    return None

