"""A subject's question bank on disk, and the checks that need the subject to make sense.

A bank is a folder of three JSON Lines files:
  questions.jsonl  Question records      (from collect)
  answers.jsonl    GoldAnswer records    (from teach, or written by hand)
  diagrams.jsonl   Diagram records       (description + code)
Schema problems come from the models; this module adds what only the subject
knows: that a type exists, that an MCQ gold answer picks the key, and so on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .answers import answer_flaws
from .errors import Problem, UnknownName, ValidationFailed
from .jsonl import iter_dicts, iter_jsonl, parse_object, raw_lines, write_atomic
from .models import Diagram, GoldAnswer, Question, QuestionType, diagram_id, normalise_text
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
            kind = "question id" + (" prefix (ambiguous)" if matches else "")
            raise UnknownName(kind, id_or_prefix, [q.id for q in matches or self.questions])
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

    # Root causes first: a record that failed validation is reported once, not again through
    # everything that points at it (its question's answers, its answer's diagrams).
    broken_questions = {data.get("id") or Question.content_id(data) for data in _failed(files[QUESTIONS], questions)}
    unread_answers = {data.get("question_id") for data in _failed(files[ANSWERS], answers)} if ANSWERS in files else set()
    check = _Checker(kit, problems)
    by_id = {q.id: q for _, q in questions}
    for line, question in questions:
        check.question(str(files[QUESTIONS]), line, question)
    answered = set()
    for line, answer in answers:
        answered.add(answer.question_id)
        if answer.question_id not in broken_questions:
            check.answer(str(files[ANSWERS]), line, answer, by_id.get(answer.question_id))
    if require_answers:
        for line, question in questions:
            if question.id not in answered | unread_answers:
                problems.append(Problem(str(files[QUESTIONS]), line, "id", f"question {question.id} has no gold answer in {ANSWERS}"))
    asked = {}  # question id -> the diagram descriptions its gold answers ask for
    for _, answer in answers:
        asked.setdefault(answer.question_id, set()).update(normalise_text(m.description) for m in answer.diagrams)
    for line, diagram in diagrams:
        if diagram.question_id not in broken_questions | unread_answers:
            check.diagram(str(files[DIAGRAMS]), line, diagram, by_id, asked)
    if problems:
        raise ValidationFailed(problems)
    return Bank([q for _, q in questions], [a for _, a in answers], [d for _, d in diagrams])


def _failed(path: Path, valid: list[tuple[int, object]]) -> list[dict]:
    """The records, as plain objects, of the lines of `path` that failed validation."""
    lines = {line for line, _ in valid}
    return [data for line, data in iter_dicts(path) if line not in lines]


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
            need = "options and key are required" if qtype.format == "mcq" else "it takes no options"
            self.problem(file, line, "options", f"type {qtype.id} is {qtype.format}: {need}")
        for field, message in marking_problems(qtype, q):
            self.problem(file, line, field, message)

    def answer(self, file: str, line: int, answer: GoldAnswer, q: Question | None) -> None:
        if q is None:
            self.problem(file, line, "question_id", f"no question with id {answer.question_id!r}")
            return
        qtype = self.kit.types.get(q.type)
        if qtype is None:
            return  # already reported on the question
        # The rule teach and the format-length reward apply too (answers.py).
        for flaw in answer_flaws(qtype, answer.text, q, registry().evaluators["mcq"]):
            self.problem(file, line, "text", flaw.message)

    def diagram(self, file: str, line: int, diagram: Diagram, by_id: dict[str, Question], asked: dict[str, set[str]]) -> None:
        if diagram.question_id and diagram.question_id not in by_id:
            self.problem(file, line, "question_id", f"no question with id {diagram.question_id!r}")
        elif diagram.question_id and asked and normalise_text(diagram.description) not in asked.get(diagram.question_id, set()):
            self.problem(file, line, "description",
                         f"not the description of any (DIAGRAM: ...) marker in the gold answer to {diagram.question_id}")
        formats = registry().formats
        if diagram.format not in formats:
            self.problem(file, line, "format", f"unknown diagram format {diagram.format!r}; valid: {', '.join(sorted(formats))}")
            return
        for message in formats[diagram.format].check(diagram.code):
            self.problem(file, line, "code", message)


def marking_problems(qtype: QuestionType, q: Question) -> list[tuple[str, str]]:
    """(field, message) for each way a question breaks its type's marking style."""
    levelled = {level.part for level in q.mark_scheme.levels}
    sections = [part.label for part in q.parts] or [None]
    if qtype.marking in ("points", "points-with-caps") and levelled:
        return [("mark_scheme.levels", f"type {qtype.id} is marked by {qtype.marking}, not by levels; "
                                       "its marking = 'levels' or 'mixed' would allow level descriptors")]
    if qtype.marking == "levels" and (unlevelled := [label for label in sections if label not in levelled]):
        where = ", ".join(f"part {label}" if label else "the question" for label in unlevelled)
        return [("mark_scheme.levels", f"type {qtype.id} is marked by levels, but {where} has no level descriptors")]
    if qtype.marking == "points-with-caps":
        if not q.parts:
            return [("parts", f"type {qtype.id} is marked by points with a cap per section: "
                              "its sections are parts, e.g. (a) [7] and (b) [8]")]
        if qtype.caps and (marks := [part.marks for part in q.parts]) != qtype.caps:
            return [("parts", f"type {qtype.id} caps its sections at {qtype.caps} marks; the parts have {marks}")]
    return []


# --- authoring: ids and links filled in -------------------------------------------------------


@dataclass(frozen=True)
class IdChange:
    file: Path
    line: int
    field: str  # 'id' or 'question_id'
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.old or '(none)'} -> {self.new}"


def bank_ids(path: Path) -> tuple[list[IdChange], list[Problem], dict[Path, list[dict]]]:
    """Every id and `question_id` link a bank's records should have: what to change, what cannot be
    resolved, and the records with the changes made (for `bank ids --write`).

    For writing a bank by hand: leave ids out (or keep stale ones after an edit), and
    point answers and diagrams at a question by any unique prefix of its id, or by its
    old id. Questions get ids from their content first; links then follow the questions
    (old id -> new id), and answer and diagram ids follow their content and links.
    """
    files = bank_files(Path(path))
    problems: list[Problem] = []
    records: dict[Path, list[tuple[int, dict]]] = {}
    for file in files.values():
        records[file] = []
        for number, _, raw in raw_lines(file):
            if raw.strip():
                try:
                    data, why = parse_object(raw.decode("utf-8"))
                except UnicodeDecodeError as err:
                    data, why = None, f"not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})"
                if data is None:
                    problems.append(Problem(str(file), number, None, why))
                else:
                    records[file].append((number, data))
    changes: list[IdChange] = []

    def set_field(file: Path, number: int, data: dict, key: str, value: str) -> dict:
        if data.get(key) != value:
            changes.append(IdChange(file, number, key, data.get(key), value))
        return {"id": data.get("id"), **data, key: value} if key == "id" else {**data, key: value}

    renamed: dict[str, str] = {}  # a question's id in the file -> its id from content
    questions = records[files[QUESTIONS]]
    for index, (number, data) in enumerate(questions):
        new = Question.content_id(data)
        if data.get("id"):
            renamed[data["id"]] = new
        questions[index] = (number, set_field(files[QUESTIONS], number, data, "id", new))
    ids = [data["id"] for _, data in questions]

    def link(file: Path, number: int, given: str) -> str:
        if given in ids:
            return given
        if given in renamed:
            return renamed[given]
        matches = [qid for qid in ids if qid.startswith(given)] if len(given) >= 4 else []
        if len(matches) == 1:
            return matches[0]
        why = f"no question with id {given!r}" + (" (ambiguous prefix)" if matches else "")
        problems.append(Problem(str(file), number, "question_id", why))
        return given

    for name, content_id in ((ANSWERS, GoldAnswer.content_id), (DIAGRAMS, diagram_id)):
        file = files.get(name)
        for index, (number, data) in enumerate(records.get(file, [])):
            if isinstance(data.get("question_id"), str):
                data = set_field(file, number, data, "question_id", link(file, number, data["question_id"]))
            records[file][index] = (number, set_field(file, number, data, "id", content_id(data)))
    return changes, problems, {file: [data for _, data in rows] for file, rows in records.items()}


def write_bank_records(records: dict[Path, list[dict]]) -> None:
    for file, rows in records.items():
        write_atomic(file, "".join(json.dumps(data, ensure_ascii=False) + "\n" for data in rows))


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
    return BankStats(len(bank.questions), len(bank.answers), len(bank.diagrams), per_type, per_topic, per_level,
                     dict(sorted(keys.items())), with_diagram, formats)
