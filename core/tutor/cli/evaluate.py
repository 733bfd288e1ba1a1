"""`tutor eval`: base vs tuned on held-out questions and MCQ sets, with intervals; `eval show`, `eval compare`, `eval markers`."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import say, table


def _models(models: str | None, adapters: tuple[str, ...], base: bool, gate: bool, rag: bool = False) -> list[str]:
    """The lineup from --models, or from --base and --adapter (default: the latest adapter); --gate needs the base model;
    --rag adds each adapter again with the knowledge base (NAME+rag), right after it."""
    if models and (adapters or base):
        raise click.UsageError("give the models either as --models base,latest,PATH or with --base and --adapter, not both")
    names = [m.strip() for m in models.split(",")] if models else [*(["base"] if base else []), *(adapters or ["latest"])]
    if rag:
        names = [n for name in names for n in ([name, f"{name}+rag"] if name != "base" and not name.endswith("+rag") else [name])]
    if gate and "base" not in names:
        say("--gate compares with the base model: adding it to the lineup")
        names = ["base", *names]
    return names


@click.group(invoke_without_command=True)
@click.option("--models", metavar="LIST", help="Comma-separated: base, latest, or adapter folders, e.g. base,latest; "
              "NAME+rag: with the knowledge base.")
@click.option("--adapter", "adapters", multiple=True, metavar="latest|PATH", help="An adapter to evaluate (repeatable; default: latest).")
@click.option("--base", "with_base", is_flag=True, help="Evaluate the base model too (the adapters' own base model).")
@click.option("--split", type=click.Choice(["test", "validation", "bank"]),
              help="The held-out split of `dataset build` (default: test), or the whole bank.")
@click.option("--bank", "bank_path", type=click.Path(exists=True, path_type=Path), help="Evaluate this bank (folder or file) whole.")
@click.option("--mcq", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="A multiple-choice file (MMLU CSV or JSONL), reported as its own set (repeatable). Alone, only the files are evaluated.")
@click.option("--shots", type=click.IntRange(0), default=0, show_default=True, help="Few-shot examples for log-likelihood MCQ scoring.")
@click.option("--dev", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The MCQ file --shots takes its examples from.")
@click.option("--types", metavar="LIST", help="Only these question types (comma-separated).")
@click.option("--limit", type=click.IntRange(1), help="Only the first N questions of each set (a quick run).")
@click.option("--judge", type=click.Choice(["teacher"]), help="Also mark coverage with the teacher as a model judge.")
@click.option("--engine", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True,
              help="Generate with transformers, or (on a GPU) through a vLLM server with the adapters as LoRA modules.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=384, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=24, show_default=True,
              help="Prompts generated or scored together (24: the fastest measured on 2 cores; lower it for a large model).")
@click.option("--rag", is_flag=True, help="Also evaluate each adapter with the knowledge base's chunks in its prompts (NAME+rag), "
              "paired with it on the same questions.")
@click.option("--gate", is_flag=True, help="Exit 1 when a tuned model is significantly worse than the base on MCQ accuracy or coverage.")
@click.pass_context
def eval_(ctx, models, adapters, with_base, split, bank_path, mcq, shots, dev, types, limit, judge, engine, max_new_tokens, batch_size,
          rag, gate):
    """Evaluate the subject's adapters against their base model.

    \b
    Metrics: MCQ accuracy by log-likelihood (lm-evaluation-harness, MMLU's prompt) and
    by the generated answer; final answers to their significant figures; mark-scheme
    coverage (a rule marker, and with --judge a model judge); form; diagram code that
    compiles; the gold answers' loss and perplexity. Every rate has a 95% interval and
    every model is compared with the first on the same items (McNemar's exact test, or
    a sign-flip test with a paired bootstrap interval). docs/evaluating.md has it all.
    Writes <workspace>/<subject>/evals/<UTC time>/: report.md, summary.json,
    results.jsonl and PNG plots.
    """
    if ctx.invoked_subcommand:
        return
    from ..eval import report
    from ..eval.run import Options, evaluate

    state = ctx.obj
    kit = state.kit()
    if bank_path and split:
        raise click.UsageError("--bank evaluates a whole bank: it goes without --split")
    lineup = _models(models, adapters, with_base, gate, rag)
    options = Options(split=split, bank=bank_path, mcq=list(mcq), dev=dev, models=lineup, shots=shots,
                      limit=limit, types=[t.strip() for t in types.split(",")] if types else None, judge=judge, engine=engine,
                      max_new_tokens=max_new_tokens, batch_size=batch_size)
    folder, summary = evaluate(kit, state.workspace, options, say=say)
    table(*report.show_rows(summary))
    click.echo(f"\n{summary['headline']}")
    for line in summary.get("rag", []):
        click.echo(line)
    click.echo(f"report: {folder / 'report.md'}")
    if gate and (reasons := report.gate(summary)):
        for reason in reasons:
            click.echo(f"gate: {reason}", err=True)
        ctx.exit(1)


eval_.name = "eval"


@eval_.command("show")
@click.argument("run", required=False)
@click.pass_obj
def show(state, run):
    """The summary table of RUN (a folder name under evals/, or a path; default: the newest)."""
    from ..eval import report

    kit = state.kit()
    folder = report.find_run(state.workspace, kit.name, run)
    summary = report.read_summary(folder)
    click.echo(f"{folder}")
    table(*report.show_rows(summary))
    click.echo(f"\n{summary['headline']}")
    for line in summary.get("rag", []):
        click.echo(line)


@eval_.command("compare")
@click.argument("first")
@click.argument("second")
@click.pass_obj
def compare(state, first, second):
    """Two saved runs side by side: each metric and model, and the difference."""
    from ..eval import report

    kit = state.kit()
    a, b = (report.read_summary(report.find_run(state.workspace, kit.name, name)) for name in (first, second))
    table(*report.compare_rows(a, b))


@eval_.command("markers")
@click.option("--judge", type=click.Choice(["teacher"]), help="Also mark with the teacher as a model judge, and measure the agreement.")
@click.option("--bank", "bank_path", type=click.Path(exists=True, path_type=Path), help="A bank with gold answers.")
@click.pass_obj
def markers(state, judge, bank_path):
    """How the coverage markers score gold answers (should be near full marks) and shuffled ones (near zero)."""
    from .. import dataset as ds
    from ..eval.markers import agreement_rows, marker_agreement

    kit = state.kit()
    bank, label, _ = ds.choose_bank(kit, state.workspace, bank_path)
    say(f"marking the gold answers of {label}")
    judge_fn = None
    if judge:
        from ..eval.judge import mark_with_judge

        def judge_fn(items, advance=None):
            return mark_with_judge(kit, state.workspace, items, advance=advance)

    table(*agreement_rows(marker_agreement(kit, bank, judge=judge_fn)))
