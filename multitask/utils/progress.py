"""The one progress bar: training batches, predict's images, face detection and cache builds all show it.

    with Progress("epoch 1/5", total=len(loader), console=console, fields=("loss",)) as bar:
        for images, targets in loader:
            bar.update(images=len(images), loss=loss if step % 50 == 0 else None)   # None keeps the last value
    with Progress("face boxes", stderr=True, transient=True) as bar:
        detect_faces(paths, progress=bar.report)                  # report(done, total): a callback for loops

`update` only counts; rich redraws at most four times a second, so a loop of thousands of small steps pays
nothing for its bar. `speed` is images per second when images are counted (`images=`), with a multiplier for work
done several times per image (predict's models x views). `enabled=False` gives the same object doing nothing.
"""
from __future__ import annotations

import time

from rich import progress as rp
from rich.console import Console

REFRESH_S = 0.25


class Progress:
    def __init__(self, description: str, *, total: int | None = None, console: Console | None = None,
                 fields: tuple[str, ...] = (), enabled: bool = True, transient: bool = False, stderr: bool = False,
                 speed_factor: int = 1):
        self.enabled, self.total, self.fields = enabled, total, fields
        self.done = self.images = 0
        self.values: dict[str, str] = {name: "-" for name in fields}
        self.speed_factor = speed_factor
        self._start = self._last = time.perf_counter()
        if not enabled:
            return
        columns = [rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn()]
        columns += [rp.TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields]
        columns += [rp.TextColumn("{task.fields[speed]} img/s"), rp.TimeElapsedColumn()]
        if total is not None:
            columns += [rp.TextColumn("eta"), rp.TimeRemainingColumn()]
        self._bar = rp.Progress(*columns, console=console or Console(stderr=stderr), transient=transient,
                                refresh_per_second=4)
        self._task = self._bar.add_task(description, total=total, speed="-", **self.values)

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._bar.start()
        self._start = self._last = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._push(time.perf_counter())
            self._bar.stop()

    def update(self, advance: int = 1, *, images: int = 0, **values) -> None:
        """`advance` steps done (batches, images), `images` of them counted for the speed; other keywords are the
        bar's fields (a number shows with 4 decimals; None keeps the last value)."""
        self.done += advance
        self.images += images
        for name, value in values.items():
            if value is not None:
                self.values[name] = f"{value:.4f}" if isinstance(value, (int, float)) else str(value)
        now = time.perf_counter()
        if self.enabled and (now - self._last >= REFRESH_S or (self.total is not None and self.done >= self.total)):
            self._push(now)

    def report(self, done: int, total: int) -> None:
        """A `progress(done, total)` callback (face detection, the image cache): sets the count and the total."""
        if self.enabled and total != self.total:
            self.total = total
            self._bar.update(self._task, total=total)
        self.update(done - self.done, images=done - self.done)

    def _push(self, now: float) -> None:
        self._last = now
        speed = self.images * self.speed_factor / max(now - self._start, 1e-9)
        self._bar.update(self._task, completed=self.done, speed=f"{speed:,.0f}" if self.images else "-",
                         **self.values)
