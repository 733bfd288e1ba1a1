"""`tutor bank validate | stats | list | ids`: check, inspect and author question banks."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..console import table
from ._common import default_bank, pass_state


@click.group()
def bank():
    """Check and inspect question banks."""


@bank.command("validate")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@pass_state
def bank_validate(state, path):
    """Check a bank folder or questions file (default: the subject's bundled sample bank).

    Reports every problem as file:line: field: message, and exits 1 if there is any.
    """
    from ..bank import load_bank

    kit = state.kit()
    target = path or default_bank(state, kit)
    # The sample bank ships with its gold answers; a workspace bank gets them later, from teach.
    loaded = load_bank(kit, target, require_answers=path is None and target == kit.subject.bank)
    counts = f"{len(loaded.questions)} questions, {len(loaded.answers)} gold answers, {len(loaded.diagrams)} diagrams"
    click.echo(f"{kit.name}: {target}: ok: {counts}")


@bank.command("stats")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@pass_state
def bank_stats(state, path, as_json):
    """Counts per type, topic and level, the MCQ key balance and the share of answers with diagrams."""
    from dataclasses import asdict

    from ..bank import bank_stats, load_bank

    kit = state.kit()
    stats = bank_stats(kit, load_bank(kit, path or default_bank(state, kit)))
    if as_json:
        click.echo(json.dumps({**asdict(stats), "diagram_share": round(stats.diagram_share, 3)}, indent=2))
        return
    click.echo(f"{kit.name}: {stats.questions} questions, {stats.gold_answers} gold answers, {stats.diagrams} diagrams\n")
    table(["type", "level", "questions", "answers with diagrams"], [
        (t, kit.types[t].level if t in kit.types else "?", str(n), "{}/{}".format(*stats.with_diagram.get(t, (0, 0))))
        for t, n in stats.per_type.items()
    ])
    click.echo()
    table(["topic", "questions"], [(t, str(n)) for t, n in stats.per_topic.items()])
    click.echo()
    table(["level", "questions"], [(lv, str(n)) for lv, n in sorted(stats.per_level.items())])
    click.echo()
    table(["MCQ key", "questions"], [(k, str(n)) for k, n in stats.mcq_keys.items()])
    click.echo()
    table(["diagram format", "diagrams"], [(f, str(n)) for f, n in sorted(stats.diagram_formats.items())])
    click.echo(f"\ngold answers with a (DIAGRAM: ...) marker: {stats.diagram_share:.0%}")


@bank.command("list")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--type", "type_id", help="Only questions of this type.")
@pass_state
def bank_list(state, path, type_id):
    """List a bank's questions: id, type, topic, marks and the start of the stem."""
    from ..bank import load_bank

    kit = state.kit()
    if type_id:
        kit.type(type_id)  # an unknown type is an error, not an empty list
    loaded = load_bank(kit, path or default_bank(state, kit))
    rows = [(q.id, q.type, q.topic, str(q.marks), " ".join(q.stem.split())[:60]) for q in loaded.questions if type_id in (None, q.type)]
    table(["id", "type", "topic", "marks", "stem"], rows)


@bank.command("ids")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--write", is_flag=True, help="Rewrite the files with the ids and links filled in (atomically, records in their order).")
@pass_state
def bank_ids(state, path, write):
    """Fill in and check a bank's ids and question_id links, for banks written by hand.

    Leave `id` out of a record, or keep a stale one after editing it; point an
    answer or a diagram at its question by any unique prefix (4 or more
    characters) of the question's id, or by the id it had before an edit. Lists
    every change as file:line: field: old -> new and exits 1 if there is any;
    --write makes them. Links that match no question are reported, not guessed.
    """
    from ..bank import bank_ids, write_bank_records
    from ..errors import ValidationFailed

    kit = state.kit()
    target = path or default_bank(state, kit)
    changes, problems, records = bank_ids(target)
    for change in changes:
        click.echo(str(change))
    unreadable = [p for p in problems if p.field is None]
    if write and changes and not unreadable:  # a line that is not JSON would be lost: fix those first
        write_bank_records(records)
    written = write and not unreadable
    summary = (f"{len(changes)} changed" if written else f"{len(changes)} to change; --write makes them" if changes
               else "every id and link is right")
    click.echo(f"{kit.name}: {target}: {summary}", err=True)
    if problems:
        raise ValidationFailed(problems)
    if changes and not write:
        raise click.exceptions.Exit(1)
