"""`tutor run`: the whole pipeline, for one subject or all, doing only what changed."""

from __future__ import annotations

import click

from ..console import say, table
from ..pipeline import STAGE_NAMES, STAGES
from ._common import pass_state


@click.command("run", epilog="\b\nStages:\n" + "\n".join(f"  {s.name:9} {s.does}" for s in STAGES))
@click.option("--all", "all_subjects", is_flag=True, help="Every installed subject, one after the other (see below).")
@click.option("--from", "start", type=click.Choice(STAGE_NAMES), help="Start at this stage; the ones before it are left as they are.")
@click.option("--until", type=click.Choice(STAGE_NAMES), help="Stop after this stage.")
@click.option("--force", multiple=True, type=click.Choice([*STAGE_NAMES, "all"]),
              help="Run this stage even if its inputs did not change (repeatable; 'all' for every stage).")
@click.option("--dry-run", is_flag=True, help="Print the plan (each stage: run or skip, and why) and do nothing.")
@pass_state
def run(state, all_subjects, start, until, force, dry_run):
    """Run the pipeline: collect -> teach -> diagrams -> kb -> dataset -> train -> eval -> export.

    \b
    Each stage runs only when its inputs changed since it last succeeded (the bank's
    files, its [section] of tutor.toml, the templates, the stages before it, the
    code's version), when it failed or was interrupted, or when its output is gone;
    <workspace>/<subject>/run.json records why. An interrupted run (Ctrl-C, a crash,
    kill -9) resumes where it stopped: teach replays its saved replies, train
    continues from its last checkpoint. Without [collect.<subject>] sources and a
    [teacher], the subject's sample bank and its gold answers are used.
    With --all, the stages that need no model (collect, teach, diagrams) start for
    every subject at once; the model stages (kb on) run one subject at a time. A failing
    subject does not stop the others. Ends with a summary, also in
    <workspace>/run-summary.md.
    """
    from ..pipeline import pipeline, showcase, summary_rows
    from ..registry import registry

    if all_subjects and state.subject_name:
        raise click.UsageError("give --subject or --all, not both")
    subjects = sorted(registry().subjects) if all_subjects else [state.kit().name]
    results = pipeline(state.workspace, subjects, start=start, until=until, force=force, dry_run=dry_run, say=say)
    for result in results:
        click.echo(f"\n{result.subject}{' (plan)' if dry_run else ''}")
        table(["stage", "status" if not dry_run else "plan", "time", "figures, or why"], summary_rows(result))
    if dry_run:
        click.echo("\nNothing was run (--dry-run).")
        return
    for result in results:
        if all(o.status in ("up to date", "skipped", "not available", "not selected") for o in result.outcomes):
            click.echo(f"\n{result.subject}: nothing to do: every stage is up to date or has nothing to do (reasons above); "
                       f"--force STAGE runs one again")
    click.echo(f"\nsummary: {state.workspace.run_summary}")
    if len(results) == 1 and not results[0].failed:
        if lines := showcase(state.workspace.pinned(), results[0].subject):
            click.echo("\n" + "\n".join(lines))
    trained = any(o.stage == "train" and o.status in ("ran", "up to date") for r in results for o in r.outcomes)
    if trained and not dry_run:
        click.echo(f"\nnext: TUTOR_API_KEYS=my-secret tutor --workspace {state.workspace.root} serve, "
                   "then open http://127.0.0.1:8000/ (the web tutor) or use the OpenAI API at http://127.0.0.1:8000/v1")
    failed = [r for r in results if r.failed]
    for result in failed:
        click.echo(f"{result.subject}: failed: {result.failed}", err=True)
    if failed:
        raise click.exceptions.Exit(1)
