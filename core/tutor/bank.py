"""A subject's question bank on disk, and the checks that need the subject to make sense.

A bank is a folder of three JSON Lines files:
  questions.jsonl  Question records      (from collect)
  answers.jsonl    GoldAnswer records    (from teach, or written by hand)
  diagrams.jsonl   Diagram records       (description + code)
Schema problems come from the models; this module adds what only the subject
knows: that a type exists, that an MCQ gold answer picks the key, and so on.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from .errors import Problem, UnknownName, ValidationFailed
from .jsonl import iter_jsonl
from .models import Diagram, GoldAnswer, Question, QuestionType, normalise_text
from .registry import SubjectKit, registry

QUESTIONS, ANSWERS, DIAGRAMS = "questions.jsonl", "answers.jsonl", "diagrams.jsonl"


@dataclass
class Bank:
    questions: list[Question]
    answers: list[GoldAnswer]
    diagrams: list[Diagram]

    def question(self, id_or_prefix: str) -> Question:
        matches = [q for q in self.questions if q.id.startswith(id_or_prefix)]
        if len(matches) != 1:
            raise UnknownName("question id" + (" prefix (ambiguous)" if matches else ""), id_or_prefix, [q.id for q in matches or self.questions])
        return matches[0]

    def answers_to(self, question_id: str) -> list[GoldAnswer]:
        return [a for a in self.answers if a.question_id == question_id]


def bank_files(path: Path) -> dict[str, Path]:
    """The bank files at `path`: a bank folder, or a single questions file."""
    if path.is_dir():
        files = {name: path / name for name in (QUESTIONS, ANSWERS, DIAGRAMS) if (path / name).exists()}
        if QUESTIONS not in files:
            raise ValidationFailed([Problem(str(path), None, None, f"no {QUESTIONS} in this folder")])
        return files
    if not path.exists():
        raise ValidationFailed([Problem(str(path), None, None, "no such file")])
    return {QUESTIONS: path}


def load_bank(kit: SubjectKit, path: Path, *, require_answers: bool = False) -> Bank:
    """Read and cross-check a bank; ValidationFailed lists every problem found."""
    files = bank_files(Path(path))
    problems: list[Problem] = []
    questions = list(iter_jsonl(files[QUESTIONS], Question, problems))
    answers = list(iter_jsonl(files[ANSWERS], GoldAnswer, problems)) if ANSWERS in files else []
    diagrams = list(iter_jsonl(files[DIAGRAMS], Diagram, problems)) if DIAGRAMS in files else []

    check = _Checker(kit, problems)
    by_id = {q.id: q for _, q in questions}
    for line, question in questions:
        check.question(str(files[QUESTIONS]), line, question)
    answered = set()
    for line, answer in answers:
        answered.add(answer.question_id)
        check.answer(str(files[ANSWERS]), line, answer, by_id.get(answer.question_id))
    if require_answers:
        for line, question in questions:
            if question.id not in answered:
                problems.append(Problem(str(files[QUESTIONS]), line, "id", f"question {question.id} has no gold answer in {ANSWERS}"))
    asked = {}  # question id -> the diagram descriptions its gold answers ask for
    for _, answer in answers:
        asked.setdefault(answer.question_id, set()).update(normalise_text(m.description) for m in answer.diagrams)
    for line, diagram in diagrams:
        check.diagram(str(files[DIAGRAMS]), line, diagram, by_id, asked)
    if problems:
        raise ValidationFailed(problems)
    return Bank([q for _, q in questions], [a for _, a in answers], [d for _, d in diagrams])


class _Checker:
    def __init__(self, kit: SubjectKit, problems: list[Problem]):
        self.kit, self.problems = kit, problems

    def problem(self, file: str, line: int, field: str | None, message: str) -> None:
        self.problems.append(Problem(file, line, field, message))

    def question(self, file: str, line: int, q: Question) -> None:
        subject = self.kit.subject
        if q.subject != subject.name:
            self.problem(file, line, "subject", f"{q.subject!r} is not this bank's subject {subject.name!r}")
        if q.topic not in subject.topics:
            self.problem(file, line, "topic", f"unknown topic {q.topic!r}; valid: {', '.join(subject.topics)}")
        qtype = self.kit.types.get(q.type)
        if qtype is None:
            self.problem(file, line, "type", f"unknown question type {q.type!r}; valid: {', '.join(sorted(self.kit.types))}")
            return
        if qtype.marks is not None and q.marks != qtype.marks:
            self.problem(file, line, "marks", f"a {qtype.id} question has {qtype.marks} marks, not {q.marks}")
        if (qtype.format == "mcq") != q.is_mcq:
            self.problem(file, line, "options", f"type {qtype.id} is {qtype.format}: " + ("options and key are required" if qtype.format == "mcq" else "it takes no options"))
        if qtype.format == "essay" and q.marks >= 12 and not q.mark_scheme.levels:
            self.problem(file, line, "mark_scheme.levels", "an essay of 12 marks or more needs level descriptors")

    def answer(self, file: str, line: int, answer: GoldAnswer, q: Question | None) -> None:
        if q is None:
            self.problem(file, line, "question_id", f"no question with id {answer.question_id!r}")
            return
        qtype = self.kit.types.get(q.type)
        if qtype is None:
            return  # already reported on the question
        markers = answer.diagrams
        if qtype.diagrams == "required" and not markers:
            self.problem(file, line, "text", f"type {qtype.id} expects a (DIAGRAM: ...) marker, none found")
        if qtype.diagrams == "none" and markers:
            self.problem(file, line, "text", f"type {qtype.id} takes no diagrams, found {len(markers)}")
        if qtype.answer_words and not qtype.answer_words[0] <= answer.words <= qtype.answer_words[1]:
            low, high = qtype.answer_words
            self.problem(file, line, "text", f"{answer.words} words; a {qtype.id} answer has {low} to {high} (diagram descriptions not counted)")
        if q.is_mcq:
            score = registry().evaluators["mcq"].score(q, answer.text)
            if score.marks != score.out_of:
                self.problem(file, line, "text", f"the MCQ gold answer does not commit to the key ({score.feedback})")

    def diagram(self, file: str, line: int, diagram: Diagram, by_id: dict[str, Question], asked: dict[str, set[str]]) -> None:
        if diagram.question_id and diagram.question_id not in by_id:
            self.problem(file, line, "question_id", f"no question with id {diagram.question_id!r}")
        elif diagram.question_id and asked and normalise_text(diagram.description) not in asked.get(diagram.question_id, set()):
            self.problem(file, line, "description", f"not the description of any (DIAGRAM: ...) marker in the gold answer to {diagram.question_id}")
        formats = registry().formats
        if diagram.format not in formats:
            self.problem(file, line, "format", f"unknown diagram format {diagram.format!r}; valid: {', '.join(sorted(formats))}")
            return
        for message in formats[diagram.format].check(diagram.code):
            self.problem(file, line, "code", message)


def read_question_types(path: Path, subject: str) -> list[QuestionType]:
    """Question types from a plugin's TOML file: `[[types]]` tables (see docs/plugin-guide.md)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValidationFailed([Problem(str(path), None, None, str(err))]) from None
    # tomllib keeps no positions; the n-th `[[types]]` header is where table n starts.
    starts = [number for number, line in enumerate(text.splitlines(), start=1) if line.strip() == "[[types]]"]
    problems: list[Problem] = []
    types = []
    for index, table in enumerate(data.get("types", [])):
        try:
            types.append(QuestionType.model_validate({"subject": subject, **table}))
        except ValidationError as err:
            line = starts[index] if index < len(starts) else None
            label = f"types[{index}] ({table.get('id', '?')})"
            problems += [Problem(str(path), line, ".".join([label, *map(str, e["loc"])]), e["msg"].removeprefix("Value error, ")) for e in err.errors()]
    if not types and not problems:
        problems.append(Problem(str(path), None, None, "no [[types]] tables"))
    if problems:
        raise ValidationFailed(problems)
    return types


@dataclass
class BankStats:
    """The figures `bank stats` prints, and the sample-bank minimums are checked against."""

    questions: int
    gold_answers: int
    diagrams: int
    per_type: dict[str, int]
    per_topic: dict[str, int]
    per_level: dict[str, int]
    mcq_keys: dict[str, int]
    with_diagram: dict[str, tuple[int, int]]  # type -> (gold answers with a marker, gold answers)
    diagram_formats: dict[str, int]

    @property
    def diagram_share(self) -> float:
        answered = sum(total for _, total in self.with_diagram.values())
        return sum(n for n, _ in self.with_diagram.values()) / answered if answered else 0.0


def bank_stats(kit: SubjectKit, bank: Bank) -> BankStats:
    # Zero rows for types and topics the bank lacks: a gap should show, not vanish.
    per_type = dict.fromkeys(kit.types, 0)
    per_topic = dict.fromkeys(kit.subject.topics, 0)
    per_level: dict[str, int] = {}
    keys = {letter: 0 for q in bank.questions for letter in q.options}
    by_id = {q.id: q for q in bank.questions}
    for q in bank.questions:
        per_type[q.type] = per_type.get(q.type, 0) + 1
        per_topic[q.topic] = per_topic.get(q.topic, 0) + 1
        level = kit.types[q.type].level if q.type in kit.types else "?"
        per_level[level] = per_level.get(level, 0) + 1
        if q.key:
            keys[q.key] += 1
    with_diagram: dict[str, tuple[int, int]] = {}
    for answer in bank.answers:
        question = by_id.get(answer.question_id)
        if question:
            marked, total = with_diagram.get(question.type, (0, 0))
            with_diagram[question.type] = (marked + bool(answer.diagrams), total + 1)
    formats: dict[str, int] = {}
    for diagram in bank.diagrams:
        formats[diagram.format] = formats.get(diagram.format, 0) + 1
    return BankStats(len(bank.questions), len(bank.answers), len(bank.diagrams), per_type, per_topic, per_level, dict(sorted(keys.items())), with_diagram, formats)
