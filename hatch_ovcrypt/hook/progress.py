"""Progress lines for long operations, shown on an interactive terminal only."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

MIN_BYTES = 64 << 20  # smaller files finish before a progress line would help


def progress_for(label: str, total: int) -> Callable[[int], None] | None:
    """A callback taking bytes done, drawing `label  42%  1.2 GB/s` on stderr; None when not worth it."""
    if total < MIN_BYTES or not sys.stderr.isatty():
        return None
    start = time.perf_counter()
    last = [0.0]

    def report(done: int) -> None:
        now = time.perf_counter()
        if now - last[0] < 0.1 and done < total:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9) / 1e9
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label}  {100 * done // total:3d}%  {rate:.2f} GB/s{end}")
        sys.stderr.flush()

    return report
