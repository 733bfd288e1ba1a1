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
    """A progress bar on stderr when it is a terminal; silent in pipes and CI logs.

    `with progress(total, label) as advance:` gives a function that moves the
    bar: advance() by one, or advance(completed=n, total=m, **fields) to set
    it. `extra` is a rich column template over those fields, shown beside the
    count (the teach stage shows tokens and cost there).
    """

    def __init__(self, total: int | None, label: str, extra: str | None = None, **fields):
        self.total, self.label, self.extra, self.fields = total, label, extra, fields

    def __enter__(self) -> Callable[..., None]:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   *([TextColumn(self.extra)] if self.extra else []), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=console, disable=not console.is_terminal)
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total, **self.fields)

        def advance(*_, **update) -> None:
            if update:
                self.bar.update(task, **update)
            else:
                self.bar.advance(task)

        return advance

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


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
