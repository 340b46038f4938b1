"""One-line error messages, which every user-facing error of the toolkit promises.

A message often quotes a name from a file (an image name, a class, a path), and such a name
may hold a line break: `one_line` escapes those, so the message still prints as one line.
"""
from __future__ import annotations

# every character str.splitlines() breaks at, shown as its escape
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text) -> str:
    """`text` (stripped) with its line breaks escaped."""
    return str(text).strip().translate(_LINE_BREAKS)


class OneLineError(Exception):
    """Base of the toolkit's user-facing errors: the message is always one line."""

    def __init__(self, message="", *args):
        super().__init__(one_line(message), *args)
