"""External multiple-choice sets: MMLU-style CSV files and JSON Lines, read into questions of the subject.

Layouts (`tutor eval --mcq FILE`):
  - CSV (.csv): `question,choice0,...,choiceN,answer`: two choices or more, the
    answer in the last column as a 0-based index (the common export of MMLU)
    or a letter (what lm-evaluation-harness's own MMLU files hold). A header
    row is optional: a first row whose last cell is neither an index nor a
    letter is one. Comma-separated, quotes as in any CSV export.
  - JSON Lines (.jsonl): {"question": ..., "choices": [...], "answer": index or letter};
    other keys (a subject, an id) are ignored.

Files like these come from elsewhere and are often a little broken. Every bad
row gives one Problem with the file and line, and the good rows are still
evaluated: a wrong column count, an answer out of range, an empty question or
option, a line that is not UTF-8 (a file saved in another encoding fails only
on its lines with non-ASCII characters) or not JSON. Decoding is done line by
line for that reason, not by jsonl.import_dicts, which refuses a whole file in
the wrong encoding, as an import into the bank must.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..errors import Problem, TutorError
from ..jsonl import parse_object, raw_lines
from ..models import Question, Source

if TYPE_CHECKING:
    from ..registry import SubjectKit

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # option labels: a Question's options are keyed by one capital letter
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_ANSWER_SHAPE = re.compile(r"\d+|[A-Za-z]")  # what an answer cell holds: an index or a letter


def read_mcq_file(path: Path, kit: SubjectKit) -> tuple[list[Question], list[Problem]]:
    """The good rows of an MCQ file as questions of the subject, and one Problem for each bad row, in line order.

    Each question has the subject's first multiple-choice type, options A, B, ...
    in the file's order, one mark with the key as its one-point mark scheme, and
    Source(name=file name, line=its line). External sets carry no topic: every
    question gets the subject's first topic, so per-topic tables put them in
    one row that says nothing about topics.
    """
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise TutorError(f"{path}: not an MCQ file this reads; valid suffixes: {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise TutorError(f"{path}: no such file")
    builder = _Builder(path, kit)
    rows = _csv_rows(path, builder.problems) if kind == "csv" else _jsonl_rows(path, builder.problems)
    for line, row in rows:
        builder.add(line, row)
    return builder.questions, sorted(builder.problems, key=lambda problem: problem.line or 0)


# --- rows: (line, {question, choices, answer}) or (line, why it is not one) -----------------


def _decoded_lines(path: Path, problems: list[Problem]) -> Iterator[tuple[int, str]]:
    """(line number, text) of each physical line that is UTF-8; a Problem for each that is not."""
    for number, _, raw in raw_lines(path):
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(Problem(str(path), number, None, f"not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1}); "
                                                             "save the file as UTF-8"))


def _csv_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[int, dict | str]]:
    """Each CSV record as {"question", "choices", "answer"}, or why it is not one, at its first line.

    All records are read first: whether the first is a header, and the column
    count every row must have, depend on the file as a whole.
    """
    records = list(_csv_records(path, problems))
    tables = [fields for _, fields in records if isinstance(fields, list)]
    if not tables:
        yield from records  # nothing but rows that are not CSV: each is its own problem
        return
    header = isinstance(records[0][1], list) and not _ANSWER_SHAPE.fullmatch(records[0][1][-1].strip())
    if header:
        columns = len(records.pop(0)[1])
    else:
        columns = Counter(map(len, tables)).most_common(1)[0][0]
    if columns < 4:
        what = "the header has" if header else "most rows have"
        raise TutorError(f"{path}: {what} {columns} column(s); an MCQ CSV has question, two choices or more, and answer "
                         "(question,choice0,choice1,choice2,choice3,answer)")
    for line, fields in records:
        if isinstance(fields, str):
            yield line, fields
        elif len(fields) != columns:
            yield line, f"{len(fields)} column(s), expected {columns} (question, {columns - 2} choices, answer)"
        else:
            yield line, {"question": fields[0], "choices": fields[1:-1], "answer": fields[-1]}


def _csv_records(path: Path, problems: list[Problem]) -> Iterator[tuple[int, list[str] | str]]:
    """(first line, cells) of each non-blank CSV record, or (first line, why it is not valid CSV).

    As collect's reader does: strict, so a quote closed in the wrong place is
    the row's error rather than glued onto its cell, and csv starts afresh on
    the next line after an error, so one bad row costs one row.
    """
    lines: list[int] = []  # the physical lines of the record being read

    def feed() -> Iterator[str]:
        for number, text in _decoded_lines(path, problems):
            lines.append(number)
            yield text

    reader = csv.reader(feed(), strict=True)
    while True:
        try:
            fields: list[str] | str = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            fields = f"not valid CSV: {err}"
            if len(lines) > 1:  # a quote left open swallowed the lines below it
                fields += f" (a quote opened on line {lines[0]} runs to line {lines[-1]}; the rows in between were not read)"
        if lines and fields != []:
            yield lines[0], fields
        lines.clear()


def _jsonl_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[int, dict | str]]:
    for number, text in _decoded_lines(path, problems):
        if text.strip():
            data, why = parse_object(text)
            yield number, data if data is not None else why


# --- questions -------------------------------------------------------------------------


class _Builder:
    """Turns rows into questions of the subject, or into problems."""

    def __init__(self, path: Path, kit: SubjectKit):
        self.path, self.kit = path, kit
        mcq_types = [t.id for t in kit.types.values() if t.format == "mcq"]
        if not mcq_types:
            raise TutorError(f"subject {kit.name!r} has no multiple-choice question type to evaluate {path.name} as; "
                             f"its types: {', '.join(kit.types) or '(none)'}")
        self.type = mcq_types[0]
        self.questions: list[Question] = []
        self.problems: list[Problem] = []

    def add(self, line: int, row: dict | str) -> None:
        if isinstance(row, str):
            self.problems.append(Problem(str(self.path), line, None, row))
            return
        problem = _row_problem(row)
        if problem:
            self.problems.append(Problem(str(self.path), line, *problem))
            return
        choices = [str(c).strip() for c in row["choices"]]
        options = dict(zip(LETTERS, choices))
        key = LETTERS[_answer_index(row["answer"], len(choices))]
        try:
            question = Question(subject=self.kit.name, type=self.type, topic=self.kit.subject.topics[0], stem=row["question"].strip(),
                                options=options, key=key, marks=1, mark_scheme={"points": [{"text": key}]},
                                source=Source(name=self.path.name, line=line))
        except ValidationError as err:  # e.g. a control character in a cell
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"])) or None
            self.problems.append(Problem(str(self.path), line, where, first["msg"].removeprefix("Value error, ")))
            return
        self.questions.append(question)


def _row_problem(row: dict) -> tuple[str | None, str] | None:
    """(field, what is wrong) with a row's question, choices or answer; None when it makes a question."""
    question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
    if not isinstance(question, str):
        return "question", "missing" if question is None else f"not text: {question!r}"
    if not question.strip():
        return "question", "empty"
    if not isinstance(choices, list) or len(choices) < 2:
        return "choices", "a list of two choices or more is required"
    if len(choices) > len(LETTERS):
        return "choices", f"{len(choices)} choices; at most {len(LETTERS)} (options are lettered A-Z)"
    for index, choice in enumerate(choices):
        label = f"choice {index} ({LETTERS[index]})"
        if isinstance(choice, bool) or not isinstance(choice, str | int | float):  # numbers are fine as options; lists are not
            return "choices", f"{label} is not text: {choice!r}"
        if not str(choice).strip():
            return "choices", f"{label} is empty"
    if _answer_index(answer, len(choices)) is None:
        last = len(choices) - 1
        return "answer", f"{answer!r} is not a choice: {len(choices)} choices take 0-{last} or A-{LETTERS[last]}"
    return None


def _answer_index(answer: Any, choices: int) -> int | None:
    """The 0-based choice an answer names (an index, a digit string or a letter), or None when it names none."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, str):
        answer = answer.strip()
        if re.fullmatch(r"\d+", answer):
            answer = int(answer)
        elif re.fullmatch(r"[A-Za-z]", answer):
            answer = LETTERS.index(answer.upper())
    return answer if isinstance(answer, int) and 0 <= answer < choices else None
