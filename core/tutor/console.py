"""What the tool says to a person: status lines, tables and progress bars, on the terminal.

One place for all three, used by the CLI and by the stages that report as
they go (training, model downloads). rich is imported only when a bar is shown.
"""

from __future__ import annotations

from collections.abc import Callable

import click


def say(message: str) -> None:
    """A status line, on stderr: stdout stays the command's result, for pipes."""
    click.echo(message, err=True)


def table(headers: list[str], rows: list[tuple[str, ...]]) -> None:
    """A plain aligned table: readable in a terminal, greppable in a pipe."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


class progress:
    """A progress bar on stderr when it is a terminal; in a pipe or a CI log, a plain line every minute instead.

    `with progress(total, label) as advance:` gives a function that moves the
    bar: advance() by one, advance(advance=n) by n, or advance(completed=n,
    total=m, **fields) to set it. `extra` is a rich column template over those fields, shown beside the
    count (the teach stage shows tokens and cost there).
    Without a terminal a bar is invisible, and an hour of training or
    evaluating in `tutor run > log` would look like a hang: so a heartbeat
    line says how far the work is every HEARTBEAT seconds, and how long it
    took when it ends. Work shorter than that prints nothing.
    """

    HEARTBEAT = 60.0  # seconds between plain lines when stderr is not a terminal

    def __init__(self, total: int | None, label: str, extra: str | None = None, **fields):
        self.total, self.label, self.extra, self.fields = total, label, extra, fields
        self.heartbeat: _Heartbeat | None = None

    def __enter__(self) -> Callable[..., None]:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   *([TextColumn(self.extra)] if self.extra else []), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=console, disable=not console.is_terminal)
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total, **self.fields)
        if not console.is_terminal:
            self.heartbeat = _Heartbeat(self.label, self.total, self.HEARTBEAT)

        def advance(*_, **update) -> None:
            if update:
                self.bar.update(task, **update)
            else:
                self.bar.advance(task)
            if self.heartbeat is not None:
                self.heartbeat.move(**update)

        return advance

    def __exit__(self, *exc):
        if self.heartbeat is not None:
            self.heartbeat.stop(failed=exc[0] is not None)
        return self.bar.__exit__(*exc)


class _Heartbeat:
    """The plain-text stand-in for a bar: a daemon thread that says how far the work is, every `every` seconds."""

    def __init__(self, label: str, total: int | None, every: float):
        import threading
        import time

        self.label, self.total, self.every, self.done = label, total, every, 0
        self.clock = time.monotonic
        self.started = self.clock()
        self.stopped = threading.Event()
        threading.Thread(target=self._beat, name=f"heartbeat: {label}", daemon=True).start()

    def move(self, completed: int | None = None, advance: int | None = None, total: int | None = None, **fields) -> None:
        """As rich's update moves a bar: to `completed`, by `advance`, or by one when called bare (fields alone move nothing)."""
        if completed is not None:
            self.done = completed
        elif advance is not None:
            self.done += advance
        elif not fields and total is None:
            self.done += 1
        self.total = total if total is not None else self.total

    def _where(self) -> str:
        elapsed = _duration(self.clock() - self.started)
        if not self.total:
            return f"{self.done} done, {elapsed}" if self.done else f"at work, {elapsed}"
        return f"{self.done}/{self.total} ({100 * self.done // self.total}%), {elapsed}"

    def _beat(self) -> None:
        while not self.stopped.wait(self.every):
            say(f"{self.label}: {self._where()}")

    def stop(self, failed: bool) -> None:
        self.stopped.set()
        if self.clock() - self.started >= self.every:
            where = self._where() if self.total or self.done else _duration(self.clock() - self.started)
            say(f"{self.label}: {'stopped' if failed else 'done'}, {where}")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class cost_progress:
    """A bar for a paid API's work: done/total with tokens and estimated cost beside it, moved by reports that carry
    done, total and usage (teach's Progress). `silent` shows nothing (a background thread: one live display at a time)."""

    def __init__(self, label: str, silent: bool = False):
        self.bar = None if silent else progress(None, label, extra="{task.fields[tokens]:,} tokens  ${task.fields[cost]:.2f}",
                                                tokens=0, cost=0.0)

    def __enter__(self) -> Callable[..., None]:
        if self.bar is None:
            return lambda report: None
        advance = self.bar.__enter__()
        return lambda p: advance(completed=p.done, total=p.total or None, tokens=p.usage.tokens, cost=p.usage.cost)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc) if self.bar is not None else False
