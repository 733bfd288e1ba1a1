"""Adapter runs: the roles, the run layout, newest-run lookup, and the subject/role binding.

Every run is a folder; the newest finished one is what `ask` loads:

  <workspace>/<subject>/adapters/<role>/<run>/     run = <UTC time to the ms>-<sft|grpo>
    tutor-run.json        what it was started with (written first: --resume reads it)
    checkpoints/          the trainer's checkpoints, for --resume
    log.jsonl             one line per logged step and evaluation (append-only)
    adapter_config.json, adapter_model.safetensors, tokenizer files
    loss.png              the loss curve
    tutor-adapter.json    metadata, written last: a run without it is unfinished

An adapter, a run and a dataset are each bound to one subject and role
(their metadata says which). `check_bound` is the one check that train,
ask and dataset loading make before using one.

Kept free of heavy imports: the CLI reads ROLES to build its options.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TutorError

if TYPE_CHECKING:
    from .workspace import Workspace

# One LoRA adapter per subject and role: `answer` is the tutor (question -> mark-scheme answer),
# `diagram` turns a DIAGRAM description into diagram code.
ROLES = ("answer", "diagram")
METHODS = ("sft", "grpo")

RUN_META = "tutor-run.json"
ADAPTER_META = "tutor-adapter.json"
LOG = "log.jsonl"
PLOT = "loss.png"
CHECKPOINTS = "checkpoints"


def adapters_dir(workspace: Workspace, subject: str, role: str) -> Path:
    return workspace.adapters_dir(subject, role)


def run_name(method: str, now: datetime | None = None) -> str:
    """<UTC time to the ms>-<method>: runs sort by name, and tests (or scripts) start two in one second."""
    return (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S.%f")[:-3] + f"-{method}"


def make_run(folder: Path, name: str) -> Path:
    """Create the run folder `folder/name`; a second run of the same millisecond gets a -2 suffix, and so on."""
    path, suffix = folder / name, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            suffix += 1
            path = folder / f"{name}-{suffix}"


def runs(workspace: Workspace, subject: str, role: str) -> list[Path]:
    """Every run of a subject's role, oldest first (names start with their UTC time)."""
    folder = adapters_dir(workspace, subject, role)
    return sorted(p for p in folder.iterdir() if (p / RUN_META).is_file()) if folder.is_dir() else []


def latest_adapter(workspace: Workspace, subject: str, role: str) -> Path | None:
    """The newest finished adapter of the subject's role, SFT or GRPO."""
    done = [p for p in runs(workspace, subject, role) if (p / ADAPTER_META).is_file()]
    return done[-1] if done else None


def unfinished(workspace: Workspace, subject: str, role: str, method: str) -> Path:
    """The newest run of `method` that has no adapter yet: what --resume continues."""
    for run in reversed(runs(workspace, subject, role)):
        if not (run / ADAPTER_META).is_file() and read_meta(run, RUN_META).get("method") == method:
            return run
    raise TutorError(f"nothing to resume: {subject} has no unfinished {method} run of the {role} role "
                     f"under {adapters_dir(workspace, subject, role)}")


def read_meta(path: Path, name: str = ADAPTER_META) -> dict[str, Any]:
    """A metadata file of a run, adapter or dataset folder."""
    what = {ADAPTER_META: "a finished tutor adapter", RUN_META: "a tutor training run"}.get(name, "a tutor folder")
    try:
        return json.loads((Path(path) / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TutorError(f"{path}: not {what} (no {name})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TutorError(f"{Path(path) / name}: unreadable ({err})") from None


def write_meta(path: Path, data: dict[str, Any]) -> None:
    from .jsonl import write_atomic

    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def check_bound(meta: dict[str, Any], subject: str, role: str, what: str, doing: str) -> None:
    """Refuse an adapter, run or dataset of another subject or role.

    `what` names the thing ("the adapter PATH"), `doing` what it was to be used
    for ("train economics from it"): the message reads "<what> belongs to
    'physics', not 'economics': refusing to <doing>".
    """
    owner = meta.get("subject")
    if owner != subject:
        raise TutorError(f"{what} belongs to {owner!r}, not {subject!r}: refusing to {doing} "
                         f"({subject} must not be taught by the {owner} teacher)")
    if meta.get("role") != role:
        raise TutorError(f"{what} is the {meta.get('role')} role's, not the {role} role's")
