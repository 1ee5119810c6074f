"""Progress lines on stdout and error lines on stderr: the two shapes of everything a command says."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    """One progress line on stdout, time-stamped, flushed at once (logs are read live)."""
    print(f"[toolkit {time.strftime('%H:%M:%S')}] {message}", flush=True)


def error(message: str) -> None:
    """One line on stderr, as every command reports an expected failure."""
    print(f"error: {message}", file=sys.stderr, flush=True)
