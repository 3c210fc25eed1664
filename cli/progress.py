"""The progress bar of `--wait`: one redrawn line on a terminal, a plain line now and then otherwise."""

from __future__ import annotations

import math
import shutil
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

from schemas import FINAL_STATUSES


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def parts_text(parts_done: int, parts_total: int) -> str:
    """The parts written so far, "parts 3/10", of an export written in parts; "" for a one-part export."""
    return f"parts {parts_done:,}/{parts_total:,}" if parts_total > 1 else ""


def progress_line(
    status: str,
    rows: int,
    total: int | None,
    rate: float | None,
    elapsed: float,
    bar_width: int = 24,
    *,
    parts_done: int = 0,
    parts_total: int = 1,
) -> str:
    """One line: status, a bar and percentage (when the total is known), rows, parts, rate, ETA or elapsed."""
    parts = [f"{status:<10}"]
    if status == "QUEUED":
        parts.append(f"waiting for a worker  {_duration(elapsed)}")
        return "  ".join(parts)
    if total:
        fraction = min(rows / total, 1.0)
        filled = int(fraction * bar_width)
        parts.append(f"[{'#' * filled}{'.' * (bar_width - filled)}] {fraction * 100:5.1f}%")
        parts.append(f"{rows:,} / {total:,} rows")
    else:
        parts.append(f"{rows:,} rows")
    if written := parts_text(parts_done, parts_total):
        parts.append(written)
    if status == "PROCESSING":
        if rate:
            parts.append(f"{rate:,.0f} rows/s")
            if total and total > rows:
                parts.append(f"ETA {_duration((total - rows) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
    else:
        parts.append(f"in {_duration(elapsed)}")
    return "  ".join(parts)


class ProgressDisplay:
    """The wait's progress on stderr: redrawn in place on a terminal, a plain line now and then otherwise."""

    RATE_WINDOW_SECONDS = 10.0
    PLAIN_EVERY_SECONDS = 5.0

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic):
        self.stream, self.clock = stream, clock
        self.tty = stream.isatty()
        self.started = clock()
        self.samples: deque[tuple[float, int]] = deque()
        self.last_status: str | None = None
        self.last_plain = -math.inf
        self.drawn = False

    def rate(self, now: float, rows: int) -> float | None:
        self.samples.append((now, rows))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.RATE_WINDOW_SECONDS:
            self.samples.popleft()
        (t0, r0) = self.samples[0]
        if now - t0 <= 0 or rows <= r0:
            return None
        return (rows - r0) / (now - t0)

    def update(self, export: dict[str, Any]) -> None:
        now = self.clock()
        status, progress = export["status"], export["progress"]
        rows, total = progress["rowsExported"], progress["rowsTotal"]
        if status == "COMPLETED" and total is None:
            total = rows
        if status != self.last_status:
            self.samples.clear()
        line = progress_line(
            status,
            rows,
            total,
            self.rate(now, rows),
            now - self.started,
            # An older API serves no parts: its exports are one part each.
            parts_done=progress.get("partsDone", 0),
            parts_total=progress.get("partsTotal", 1),
        )
        final = status in FINAL_STATUSES
        if self.tty:
            width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
            self.stream.write("\r" + line[:width] + "\x1b[K" + ("\n" if final else ""))
            self.drawn = not final
        elif final or status != self.last_status or now - self.last_plain >= self.PLAIN_EVERY_SECONDS:
            self.stream.write(line + "\n")
            self.last_plain = now
        self.stream.flush()
        self.last_status = status

    def interrupt(self) -> None:
        """Ends a half-drawn bar so the next message starts on its own line."""
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
