"""What every command module shares: the State the root group hands them, and the bank a command reads by default."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import TutorError, UnknownName
from ..workspace import Workspace


class State:
    """The root group's options, handed to every command: the subject (looked up when a command needs it) and the workspace."""

    def __init__(self, subject: str | None, workspace: Path):
        self.subject_name, self.workspace = subject, Workspace(workspace)

    def kit(self):
        from ..registry import get_subject, registry

        if not self.subject_name:
            raise UnknownName("subject", "(none given: use --subject)", list(registry().subjects))
        return get_subject(self.subject_name)


pass_state = click.make_pass_decorator(State)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TutorError(f"{path}: {err}") from None


def default_bank(state, kit) -> Path:
    """The bank `bank validate/stats/list` read without a PATH: the workspace's once it has one,
    else the subject's sample bank. One line on stderr says which, as the two are easy to mix up."""
    folder = state.workspace.bank_dir(kit.name)
    if (folder / "questions.jsonl").exists():
        click.echo(f"bank: {folder} (the workspace's)", err=True)
        return folder
    bank = bundled_bank(kit)
    click.echo(f"bank: {bank} (the subject's sample bank)", err=True)
    return bank


def bundled_bank(kit) -> Path:
    if kit.subject.bank is None:
        raise TutorError(f"subject {kit.name!r} ships no sample bank; give a bank folder or file")
    return kit.subject.bank
