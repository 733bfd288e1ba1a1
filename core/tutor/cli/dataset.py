"""`tutor dataset build`: training datasets (chat messages) from the bank."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import say, table
from ._common import pass_state


@click.group()
def dataset():
    """Build the training datasets (HF datasets of chat messages) from the bank."""


@dataset.command("build")
@click.option("--role", type=click.Choice(["answer", "diagram", "all"]), default="all", show_default=True,
              help="answer: question -> gold answer; diagram: description -> diagram code.")
@click.option("--bank", "bank_path", type=click.Path(exists=True, path_type=Path),
              help="Bank folder or questions file (default: the workspace bank if it has gold answers, else the bundled sample bank).")
@click.option("--model", "model_name", metavar="NAME",
              help="Base model whose tokenizer counts the tokens (default: [model] base in tutor.toml).")
@click.option("--seed", type=int, help="Seed of the split (default: [train] seed, 0).")
@click.option("--validation", type=click.FloatRange(0, 1, max_open=True),
              help="Share held out for validation (default: [train] validation, 0.1).")
@click.option("--test", type=click.FloatRange(0, 1, max_open=True), help="Share held out for test (default: [train] test, 0.1).")
@click.option("--identity-ratio", type=click.FloatRange(0, 1, max_open=True),
              help="Share of identity examples in the answer role's train split (default: [train] identity_ratio, 0.05).")
@pass_state
def dataset_build(state, role, bank_path, model_name, seed, validation, test, identity_ratio):
    """Turn the bank's gold answers and diagrams into train/validation/test datasets.

    Saved under <workspace>/<subject>/datasets/<role>/ with a card (README.md):
    counts per type, token statistics, the leakage check and a fingerprint.
    """
    from pydantic import ValidationError

    from .. import dataset as ds
    from ..config import TrainConfig
    from ..errors import TutorError

    kit = state.kit()
    config = state.workspace.config()
    given = {"seed": seed, "validation": validation, "test": test, "identity_ratio": identity_ratio}
    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        settings = TrainConfig.model_validate(config.train.model_dump() | overrides)
    except ValidationError as err:
        raise TutorError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None
    roles = list(ds.ROLES) if role == "all" else [role]
    from ..kb import retriever  # light: its heavy parts load on first search

    material = retriever(kit, state.workspace, say) if settings.rag else None
    for built in ds.build_roles(kit, state.workspace, roles, settings, base=model_name or config.model.base, bank_path=bank_path,
                                required=role != "all", say=say, material=material):
        name = built.role
        click.echo(f"\n{name}: {built.path}  (fingerprint {built.fingerprint})")
        table(["split", "examples", "identity", "mean tokens", "max tokens"], ds.summary_rows(built))
        click.echo(ds.leakage_line(built))
        if warning := ds.too_long_line(built):
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"card: {built.path / ds.CARD}")


# --- train -------------------------------------------------------------------------------

ROLES = ("answer", "diagram")
