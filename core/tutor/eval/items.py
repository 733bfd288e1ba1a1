"""What an evaluation runs on: sets of bank questions (a split, a whole bank) and external multiple-choice files.

A split is the one `dataset build` made, read back from the answer dataset by
question id, so eval meets exactly the questions training held out. Its
diagram items are the diagrams of those questions: the diagram role shares the
answer role's split, so they are the diagram dataset's held-out items too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TutorError

if TYPE_CHECKING:
    from ..bank import Bank
    from ..errors import Problem
    from ..models import Diagram, Question
    from ..registry import SubjectKit
    from ..workspace import Workspace

SPLITS = ("test", "validation", "bank")  # what `--split` takes; 'bank' is the whole bank


@dataclass
class EvalSet:
    """Questions evaluated together and reported as one row of the sets table."""

    name: str
    questions: list[Question]
    gold: dict[str, str] = field(default_factory=dict)  # question id -> its first gold answer (for the loss)
    diagrams: list[Diagram] = field(default_factory=list)  # diagrams of these questions (the diagram role's items)
    external: bool = False  # rows of an MCQ file: no gold answers, no diagrams, ids are file:line

    def item_id(self, question: Question) -> str:
        return f"{question.source.name}:{question.source.line}" if self.external else question.id


def bank_set(kit: SubjectKit, workspace: Workspace, split: str, bank_path: Path | None = None) -> EvalSet:
    """The held-out split (test or validation) of the answer dataset, or a whole bank ('bank', or any bank at `bank_path`)."""
    from .. import dataset as ds

    if bank_path is not None or split == "bank":
        bank, label, _ = ds.choose_bank(kit, workspace, bank_path)
        return _from_bank(f"bank {bank_path.name}" if bank_path else "bank", bank, [q.id for q in bank.questions])
    if split not in SPLITS:
        from ..errors import UnknownName

        raise UnknownName("split", split, list(SPLITS))
    data, meta = ds.load(workspace, kit.name, "answer")  # a missing dataset names `dataset build`
    ids = list(dict.fromkeys(row["question_id"] for row in data[split] if row["kind"] == "answer"))
    if not ids:
        raise TutorError(f"the {kit.name} answer dataset's {split} split is empty (the bank is too small to hold questions out): "
                         f"evaluate on the whole bank with --split bank, or rebuild with a larger {split} share")
    from ..bank import load_bank

    where = meta.get("bank_path")
    bank = load_bank(kit, Path(where)) if where and Path(where).exists() else ds.choose_bank(kit, workspace)[0]
    missing = [i for i in ids if i not in {q.id for q in bank.questions}]
    if missing:
        raise TutorError(f"the {split} split names {len(missing)} question(s) the bank no longer has ({missing[0]}...): "
                         f"rebuild it with `tutor --subject {kit.name} dataset build`")
    return _from_bank(f"{split} split", bank, ids)


def _from_bank(name: str, bank: Bank, ids: list[str]) -> EvalSet:
    wanted = set(ids)
    questions = [q for q in bank.questions if q.id in wanted]
    gold: dict[str, str] = {}
    for answer in bank.answers:
        if answer.question_id in wanted:
            gold.setdefault(answer.question_id, answer.text.strip())
    diagrams = [d for d in bank.diagrams if d.question_id in wanted]
    return EvalSet(name, questions, gold, diagrams)


def mcq_set(kit: SubjectKit, path: Path) -> tuple[EvalSet, list[Problem]]:
    """An external multiple-choice file as a set of its own, and the problems of its bad rows."""
    from .mcqfile import read_mcq_file

    questions, problems = read_mcq_file(path, kit)
    if not questions:
        raise TutorError(f"{path}: no usable multiple-choice row ({len(problems)} bad)")
    return EvalSet(path.name, questions, external=True), problems


def narrow(kit: SubjectKit, sets: list[EvalSet], *, types: list[str] | None, limit: int | None) -> list[EvalSet]:
    """Keep the questions of the given types (checked against the subject's), then the first `limit` of each set."""
    if types:
        for name in types:
            kit.type(name)  # an unknown type is an error that lists the valid ones
        wanted = set(types)
    out = []
    for s in sets:
        questions = [q for q in s.questions if not types or q.type in wanted][:limit]
        keep = {q.id for q in questions}
        out.append(EvalSet(s.name, questions, {i: g for i, g in s.gold.items() if i in keep},
                           [d for d in s.diagrams if d.question_id in keep], s.external))
    return out
