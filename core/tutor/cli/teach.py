"""`tutor teach answers | diagrams | config`: a teacher model writes gold answers and diagram code.

Only click is imported here; the teach module (and with it openai) loads
inside the commands, so `tutor --help` stays fast."""

from __future__ import annotations

import json

import click

from ..console import cost_progress, table
from ..errors import TutorError
from ._common import pass_state


@click.group()
def teach():
    """Have a teacher model (any OpenAI-compatible API) write gold answers and diagram code.

    \b
    Settings: [teacher] in tutor.toml, or TUTOR_TEACHER_* variables; see `tutor teach config`.
    Every reply is saved as it arrives: a re-run, or a restart after a crash,
    sends only what is missing.
    """


@teach.command("config")
@pass_state
def teach_config(state):
    """Show the teacher settings in effect (preset < tutor.toml < TUTOR_TEACHER_*), as JSON."""
    import os

    from ..teach import teacher_config

    cfg = teacher_config(state.workspace)
    shown = cfg.model_dump(mode="json")
    if cfg.api_key_env:  # whether the key is there, never what it is
        present = os.environ.get(cfg.api_key_env, "").strip()
        shown["api_key"] = f"set in {cfg.api_key_env}" if present else f"missing: export {cfg.api_key_env}=..."
    click.echo(json.dumps(shown, indent=2))


@teach.command("answers")
@click.option("--type", "type_id", help="Only questions of this type.")
@click.option("--limit", type=click.IntRange(0), help="At most this many questions in this run.")
@click.option("--dry-run", is_flag=True, help="Send nothing: show the prompts and estimate tokens and cost.")
@click.option("--retry-rejects", is_flag=True, help="Ask again for questions whose answers were rejected before.")
@click.option("--concurrency", type=click.IntRange(1, 1024), help="Requests in flight at once (default: teacher.concurrency).")
@pass_state
def teach_answers(state, type_id, limit, dry_run, retry_rejects, concurrency):
    """Write a gold answer for every question of the workspace bank that has none.

    Replies are checked (length in the type's band, DIAGRAM markers, the MCQ
    key); an invalid one is asked for again with the reason, then goes to
    bank/answer-rejects.jsonl. Good ones go to bank/answers.jsonl.
    """
    from .. import teach as t
    from ..llm_client import api_key

    kit = state.kit()
    cfg = _config(state, concurrency)
    if dry_run:
        return _dry_run(cfg, t.answer_estimates(kit, state.workspace, cfg, type_id, limit, retry_rejects), "questions",
                        f"replies from each type's word band at {t.TOKENS_PER_WORD:g} tokens a word")
    key = api_key(cfg)
    run = t.AnswerRun()
    with cost_progress(f"answers by {cfg.model}") as progress:
        t.run_sync(lambda: t.teach_answers(kit, state.workspace, cfg, key, run, type_id=type_id, limit=limit,
                                           retry_rejects=retry_rejects, progress=progress), run)
    bank = state.workspace.bank_dir(kit.name)
    if run.total == 0:
        return _nothing_to_ask(kit.name, f"{run.answered_before} answered", run.skipped_rejects, "rejected",
                               f"reasons in {bank / t.ANSWER_REJECTS}", "--retry-rejects",
                               f"every question has a gold answer ({run.answered_before})")
    table(["questions", "answered", "rejected", "failed", "requests", "replayed", "tokens", "est. cost", "seconds"],
           [(str(run.total), str(run.answered), str(run.rejected), str(run.failed), *_usage_cells(run.usage), f"{run.seconds:.1f}")])
    click.echo(f"answers: {bank / t.ANSWERS}")
    if run.rejected:
        click.echo(f"rejected, with reasons: {bank / t.ANSWER_REJECTS}")
    if run.skipped_rejects:
        click.echo(f"{run.skipped_rejects} rejected before and not asked again: --retry-rejects asks for them")
    _finish(run, "questions")


@teach.command("diagrams")
@click.option("--limit", type=click.IntRange(0), help="At most this many diagram requests in this run.")
@click.option("--dry-run", is_flag=True, help="Send nothing: show the prompts and estimate tokens and cost.")
@click.option("--repair-rounds", type=click.IntRange(0, 10),
              help="Times code that fails to compile is sent back with its error (default: teacher.repair_rounds).")
@click.option("--retry-failed", is_flag=True, help="Ask again for requests whose code never compiled before.")
@click.option("--concurrency", type=click.IntRange(1, 1024), help="Requests in flight at once (default: teacher.concurrency).")
@pass_state
def teach_diagrams(state, limit, dry_run, repair_rounds, retry_failed, concurrency):
    """Write diagram code for every request of `tutor diagram extract`, and keep what compiles.

    Code that fails to compile is sent back with the compiler's concise error
    for a few repair rounds. Compiled diagrams go to bank/diagrams.jsonl; every
    request's rounds to bank/diagram-attempts.jsonl.
    """
    from .. import teach as t
    from ..llm_client import api_key

    kit = state.kit()
    cfg = _config(state, concurrency)
    if repair_rounds is not None:
        cfg = cfg.model_copy(update={"repair_rounds": repair_rounds})
    if dry_run:
        return _dry_run(cfg, t.diagram_estimates(kit, state.workspace, cfg, limit, retry_failed), "requests",
                        f"replies at {t.DIAGRAM_TOKENS} tokens, first tries only (repairs cost more)")
    key = api_key(cfg)
    run = t.DiagramRun()
    with cost_progress(f"diagrams by {cfg.model}") as progress:
        t.run_sync(lambda: t.teach_diagrams(kit, state.workspace, cfg, key, run, limit=limit, retry_failed=retry_failed,
                                            progress=progress), run)
    bank = state.workspace.bank_dir(kit.name)
    if run.total == 0:
        return _nothing_to_ask(kit.name, f"{run.compiled_before} compiled", run.skipped_failures, "failed to compile",
                               f"errors in {bank / t.DIAGRAM_ATTEMPTS}", "--retry-failed",
                               f"every diagram request has compiled code ({run.compiled_before})")
    table(["format", "requests", "first try", "after repair"],
           [(name, str(n), _rate(first, n), _rate(after, n)) for name, (n, first, after) in sorted(run.per_format.items())]
           + [("all", str(run.tried), _rate(run.first_try, run.tried), _rate(run.compiled, run.tried))])
    click.echo()
    counts = (run.total, run.compiled, run.not_compiled, run.failed, run.attempts)
    headers = ["requests", "compiled", "not compiled", "failed", "replies compiled",
               "requests sent", "replayed", "tokens", "est. cost", "seconds"]
    table(headers, [(*map(str, counts), *_usage_cells(run.usage), f"{run.seconds:.1f}")])
    click.echo(f"diagrams: {bank / t.DIAGRAMS}\nattempts and errors: {bank / t.DIAGRAM_ATTEMPTS}")
    if run.skipped_failures:
        click.echo(f"{run.skipped_failures} failed before and not asked again: --retry-failed asks for them")
    _finish(run, "diagram requests")


def _nothing_to_ask(subject: str, done: str, skipped: int, why: str, where: str, flag: str, all_done: str) -> None:
    """What a run with nothing to send says: never "all done" while items were skipped for failing before."""
    if skipped:
        click.echo(f"{subject}: nothing to ask: {done}, {skipped} {why} ({where}); {flag} asks for the {why.split()[0]} ones again")
    else:
        click.echo(f"{subject}: {all_done}")


def _config(state, concurrency):
    from ..teach import teacher_config

    cfg = teacher_config(state.workspace)
    return cfg.model_copy(update={"concurrency": concurrency}) if concurrency else cfg


def _usage_cells(usage) -> tuple[str, ...]:
    return (str(usage.requests), str(usage.replayed), str(usage.tokens), f"${usage.cost:.2f}")


def _rate(n: int, of: int) -> str:
    return f"{n}/{of} ({n / of:.0%})" if of else "-"


def _finish(run, what: str) -> None:
    """Say what is left, and fail (exit 1) when items are left for a reason a re-run fixes."""

    if run.usage.errors:
        click.echo("failed attempts: " + ", ".join(f"{kind} x{n}" for kind, n in sorted(run.usage.errors.items())))
    if run.usage.maybe_billed:  # what the requests column cannot tell: money spent with nothing to show for it
        click.echo(f"{run.usage.maybe_billed} requests may have been billed without a saved reply "
                   "(timed out, or cut off or malformed after the teacher had them)")
    for failure in run.failures[:5]:
        click.echo(f"failed: {failure}", err=True)
    left = run.total - run.done
    if run.stopped:
        raise TutorError(f"stopped: {run.stopped}; {left} {what} left for the next run")
    if run.failed:
        raise TutorError(f"{run.failed} {what} got no reply in time; run the same command again to retry them")


def _dry_run(cfg, estimates, what: str, basis: str) -> None:
    shown = set()
    for est in estimates:
        if est.example and est.label not in shown:  # one prompt per type (or format): they differ only in the question
            shown.add(est.label)
            click.echo(f"##### {est.label}: the prompt of the first of {est.items} {what}")
            click.echo("\n\n".join(f"=== {m['role']} ===\n{m['content']}" for m in est.example) + "\n")
    if not estimates:
        click.echo(f"nothing to send: no {what} are waiting")
        return
    rows = [(e.label, *map(str, (e.items, e.replayed, e.prompt_tokens, e.completion_tokens)), f"${e.cost(cfg):.2f}") for e in estimates]
    total = [sum(getattr(e, name) for e in estimates) for name in ("items", "replayed", "prompt_tokens", "completion_tokens")]
    rows.append(("all", *map(str, total), f"${sum(e.cost(cfg) for e in estimates):.2f}"))
    table(["", what, "in the log (free)", "prompt tokens", "reply tokens (est.)", "est. cost"], rows)
    reasoning = f", plus {cfg.reasoning_tokens} reasoning tokens each" if cfg.reasoning_tokens else ""
    click.echo(f"\nteacher: {cfg.model} at {cfg.base_url}; "
               f"prices ${cfg.price_input:g} / ${cfg.price_output:g} per million prompt / reply tokens"
               f"; prompts at 4 characters a token, {basis}{reasoning}."
               "\nNothing was sent.")
