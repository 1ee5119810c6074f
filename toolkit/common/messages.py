"""One-line error messages for the user: an exception's first line, a TensorFlow op error's reason.

No TensorFlow import: an op error is read through its `message` attribute.
"""

from __future__ import annotations

import re


def one_line(e: BaseException) -> str:
    """The first line of `str(e)`, or the exception's type name when it has no message."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def op_message(error) -> str:
    """A TensorFlow OpError's reason alone: the first line, without `{{node ...}}` and `[Op:...]`."""
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message).strip()
    message = re.sub(r"\s*\[Op:.*$", "", message, flags=re.S).strip()
    return message.splitlines()[0] if message else type(error).__name__
