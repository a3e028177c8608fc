"""Log output that a request cannot forge: control characters (CR, LF, NUL, escape sequences,
Unicode line separators) in anything logged are written escaped, never raw."""

from __future__ import annotations

import logging
import re

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
FORMAT = "%(levelname)s %(name)s %(message)s"


def escape_controls(text: str) -> str:
    r"""`text` with each control character written as its Python escape (\r, \n, \x00)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class EscapingFormatter(logging.Formatter):
    """Each record is one line, its message escaped; a traceback that follows is marked as
    its continuation (every further line starts with `| `), so no line a client caused can
    look like a record of its own."""

    def format(self, record: logging.LogRecord) -> str:
        clean = logging.makeLogRecord(record.__dict__)
        clean.msg, clean.args = escape_controls(record.getMessage()), None
        head, _, rest = super().format(clean).partition("\n")
        lines = [escape_controls(head)]
        if rest:
            lines += [f"| {escape_controls(line)}" for line in rest.split("\n")]
        return "\n".join(lines)


def configure(level: int = logging.INFO, fmt: str = FORMAT) -> None:
    """Log to standard error through EscapingFormatter: the setup of every medmesh process
    (uvicorn's own loggers included, when it is run with `log_config=None`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
