"""Process CPU time: the clock every benchmark section reads beside wall time.

CPU seconds per image are the per-core cost; they hardly move when other processes share the
cores, where images/s does.
"""

import resource


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used so far (every thread counted)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
