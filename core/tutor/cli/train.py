"""`tutor train` and `tutor train grpo`: LoRA adapters per subject and role."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import say, table
from ..runs import PLOT, ROLES


def _metrics_table(meta: dict) -> None:
    m = meta["metrics"]
    rows = [("train loss", m.get("train_loss")),
            ("validation loss", f"{m['eval_loss_before']} -> {m['eval_loss_after']}" if m.get("eval_loss_after") is not None else None),
            ("mean reward", f"{m['reward_first']} -> {m['reward_last']} (first -> last step)"
             if m.get("reward_last") is not None else None),
            *((f"  {name}", value) for name, value in m.get("rewards_last", {}).items()),
            ("epoch check", _last_check(m.get("epoch_evals"))),
            ("steps", m["steps"]), ("epochs", m.get("epochs")), ("time", f"{m['seconds']} s"),
            ("tokens/s", m.get("tokens_per_second")), ("peak RSS", f"{m['peak_rss_mb']} MB")]
    table(["metric", "value"], [(name, str(value)) for name, value in rows if value is not None])


def _last_check(checks: list[dict] | None) -> str | None:
    """The last epoch check's scores, e.g. 'mcq 0.5, final-answer 0.25 (8 questions, epoch 2)'."""
    from ..train import EPOCH_METRICS

    if not checks:
        return None
    last = checks[-1]
    scores = ", ".join(f"{name} {last[f'eval/{name}']:g}" for name in EPOCH_METRICS if f"eval/{name}" in last)
    return f"{scores or 'nothing scored'} ({last['eval/n']} questions, epoch {round(last['epoch'], 2):g})"


def _report(result) -> None:
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun / accelerate launch, rank 0 speaks for all
        return
    _metrics_table(result.meta)
    click.echo(f"adapter: {result.run}")
    click.echo(f"loss plot: {result.run / PLOT}")


@click.group(invoke_without_command=True)
@click.option("--role", type=click.Choice(ROLES), default="answer", show_default=True,
              help="answer: the tutor (questions -> answers); diagram: descriptions -> diagram code.")
@click.option("--resume", is_flag=True, help="Continue the newest unfinished run from its last checkpoint.")
@click.option("--from", "start_from", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="ADAPTER",
              help="Continue training this finished adapter (of the same subject and role) in a new run.")
@click.option("--dataset", "dataset_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A dataset folder built by `dataset build` (default: the workspace's for the subject and role).")
@click.option("--model", "base", metavar="NAME", help="Base model: a preset, a Hugging Face id or a folder (default: [model] base).")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), help="Passes over the train split.")
@click.option("--max-steps", type=click.IntRange(1), help="Stop after this many optimizer steps (wins over --epochs).")
@click.option("--max-minutes", type=click.FloatRange(0, min_open=True), help="Stop, and save, after this many minutes of training.")
@click.option("--lr", "learning_rate", type=click.FloatRange(0, min_open=True), help="Learning rate.")
@click.option("--batch-size", type=click.IntRange(1), help="Examples per device per step.")
@click.option("--lora-r", type=click.IntRange(1), help="LoRA rank.")
@click.option("--backend", type=click.Choice(["auto", "peft", "unsloth"]), help="auto: Unsloth on a CUDA GPU that has it, else peft + trl.")
@click.option("--eval-every", type=click.Choice(["epoch"]), help="After each epoch, answer validation questions and log their mcq, "
              "form and final-answer scores (answer role).")
@click.option("--eval-limit", type=click.IntRange(1), metavar="N", help="Validation questions answered by --eval-every (default 16).")
@click.pass_context
def train(ctx, role, resume, start_from, dataset_path, base, **flags):
    """LoRA SFT of the subject's adapter for ROLE; `train grpo` reinforces it.

    \b
    Hyper-parameters: the subject's defaults < [train] in tutor.toml < these flags.
    Each run is a folder under <workspace>/<subject>/adapters/<role>/ with the
    adapter, its metadata (tutor-adapter.json), log.jsonl and loss.png.
    Runs under `accelerate launch` or `torchrun` unchanged (data-parallel).
    """
    if ctx.invoked_subcommand:
        ctx.meta["tutor.role"] = role
        options = {"resume": resume, "from": start_from, "dataset": dataset_path, "model": base, **flags}
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v]
        if given:
            raise click.UsageError(f"{', '.join(given)} belong{'s' if len(given) == 1 else ''} to SFT; give GRPO's options after `grpo`")
        return
    from .. import train as tr

    state = ctx.obj
    kit = state.kit()
    config = state.workspace.config()
    settings = tr.settings_for(kit, config.train, flags)
    result = tr.sft(kit, state.workspace, role, settings, base=base or config.model.base, resume=resume, start_from=start_from,
                    dataset_path=dataset_path, say=say)
    _report(result)


@train.command("grpo")
@click.option("--role", type=click.Choice(ROLES), help="Whose adapter to reinforce (default: the one given to `train`, else answer).")
@click.option("--task", type=click.Choice(["answer", "set"]), help="For the answer role: answer questions (default) or set new ones.")
@click.option("--from", "start_from", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="ADAPTER",
              help="The adapter to start from (default: the role's newest finished adapter).")
@click.option("--max-steps", type=click.IntRange(1), help="Optimizer steps.")
@click.option("--generations", type=click.IntRange(2), help="Completions per prompt.")
@click.option("--prompts-per-step", type=click.IntRange(1), help="Distinct prompts per step.")
@click.option("--max-completion", type=click.IntRange(8), help="Longest completion, in tokens.")
@click.option("--lr", "learning_rate", type=click.FloatRange(0, min_open=True), help="Learning rate.")
@click.option("--beta", type=click.FloatRange(0), help="KL penalty towards the starting adapter (0: none, no reference model).")
@click.option("--max-minutes", type=click.FloatRange(0, min_open=True), help="Stop, and save, after this many minutes.")
@click.option("--backend", type=click.Choice(["auto", "peft", "unsloth"]))
@click.pass_context
def train_grpo(ctx, role, task, start_from, max_minutes, backend, **grpo_flags):
    """GRPO on top of an SFT adapter, scored by the plugins' rewards for the task.

    \b
    answer: mcq-correct, mark-points, format-length (and any plugin's);
    set: novelty (TF-IDF to the bank below 0.85) and diversity within the group;
    diagram: diagram-compiles, through the sandboxed renderer.
    `tutor --subject S rewards` lists them. Writes a `-grpo` run beside the SFT ones.
    """
    from .. import train as tr

    state = ctx.obj
    kit = state.kit()
    role = role or ctx.meta.get("tutor.role") or "answer"
    if task and role != "answer":
        raise click.UsageError("--task is for the answer role (the diagram role's task is drawing)")
    flags = {"max_minutes": max_minutes, "backend": backend, "grpo": {k: v for k, v in grpo_flags.items() if v is not None}}
    settings = tr.settings_for(kit, state.workspace.config().train, flags)
    result = tr.grpo(kit, state.workspace, role, settings, task=task or role, start_from=start_from, say=say)
    _report(result)


# --- ask ---------------------------------------------------------------------------------
