"""Collect: turn exported or scraped question records into the subject's validated bank.

Records come from a question source (`csv` and `jsonl` are the core's own;
scrapers are sources too), each with where it came from. Every record is
mapped onto the Question schema, validated, deduplicated exactly (by its
content-derived id) and checked for near duplicates (neardup.py). Valid
questions are appended to <workspace>/<subject>/bank/questions.jsonl in
fsynced batches; invalid rows go to rejects.jsonl with the reason and the
source line. Re-running an import after a crash skips what is already in the
bank, so nothing is lost and nothing is doubled.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .bank import QUESTIONS, _Checker
from .errors import Problem, TutorError
from .jsonl import append_jsonl, iter_jsonl
from .models import Model, Question, Source
from .neardup import NearDuplicate, NearDuplicateIndex
from .registry import SubjectKit

REJECTS, NEAR_DUPLICATES = "rejects.jsonl", "near-duplicates.jsonl"
FIELDS = ("stem", "type", "topic", "marks", "options", "key", "mark_scheme", "parts", "final_answers", "images")
BATCH = 500  # questions per fsynced append: a crash loses at most one batch, which a re-run restores


# --- the core's file sources --------------------------------------------------------------


def read_csv(location: str, encoding: str = "utf-8-sig", delimiter: str | None = None) -> Iterator[tuple[str, dict]]:
    """Rows of a CSV file as dicts, each with "file:line" of its first line.

    Streams (a 100k-row file never sits in memory), sniffs , ; tab or | as the
    delimiter, strips a UTF-8 BOM, and keeps newlines inside quoted cells.
    """
    path = Path(location)
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        try:
            sample = text.read(65536)
            text.seek(0)
            if delimiter is None:
                try:
                    delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
                except csv.Error:
                    delimiter = ","
            reader = csv.DictReader(text, delimiter=delimiter)
            reader.fieldnames  # reads the header, so line_num counts from it
            start = reader.line_num + 1
            for row in reader:
                yield f"{path}:{start}", {k.strip(): v for k, v in row.items() if k is not None}
                start = reader.line_num + 1
        except UnicodeDecodeError as err:
            line = locals().get("start", 1)
            raise TutorError(f"{path}:{line}: not valid {encoding} ({err.reason}); pass --encoding, e.g. --encoding gbk") from None


def read_jsonl_records(location: str, encoding: str = "utf-8-sig", **_: Any) -> Iterator[tuple[str, dict]]:
    """Objects of a JSON Lines file, each with "file:line"; a bad line yields {"__error__": why}."""
    path = Path(location)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as err:
                yield where, {"__error__": f"not valid {encoding} ({err.reason}); pass --encoding"}
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield where, {"__error__": f"not valid JSON: {err.msg} at column {err.colno}"}
                continue
            yield where, record if isinstance(record, dict) else {"__error__": "expected a JSON object"}


# --- mapping a foreign record onto the Question schema ----------------------------------


@dataclass
class Mapping:
    """Which of their columns holds each of our fields, and defaults for missing ones.

    TOML form (see docs/collect.md):
        [columns]
        stem = "Question"
        options = ["Option A", "Option B", "Option C", "Option D"]
        [defaults]
        type = "alevel-mcq"
    """

    columns: dict[str, str | list[str]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, path: Path | None = None, columns: Iterable[str] = (), defaults: Iterable[str] = ()) -> Mapping:
        mapping = cls()
        if path:
            try:
                data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as err:
                raise TutorError(f"{path}: {err}") from None
            unknown = set(data) - {"columns", "defaults"}
            if unknown:
                raise TutorError(f"{path}: unknown table(s) {sorted(unknown)}; valid: columns, defaults")
            mapping.columns.update(data.get("columns", {}))
            mapping.defaults.update(data.get("defaults", {}))
        for flag, target in ((columns, mapping.columns), (defaults, mapping.defaults)):
            for item in flag:
                name, sep, value = item.partition("=")
                if not sep:
                    raise TutorError(f"{item!r} must be FIELD=VALUE")
                target[name.strip()] = [v.strip() for v in value.split(",")] if name.strip() == "options" and "," in value else value.strip()
        bad = sorted((set(mapping.columns) | set(mapping.defaults)) - set(FIELDS))
        if bad:
            raise TutorError(f"unknown field(s) {bad} in the mapping; valid: {', '.join(FIELDS)}")
        return mapping

    def missing_columns(self, header: Iterable[str]) -> list[str]:
        have = set(header)
        wanted = [c for v in self.columns.values() for c in ([v] if isinstance(v, str) else v)]
        return [c for c in wanted if c not in have]

    def apply(self, row: dict) -> dict:
        """Our fields from their row; raises ValueError naming the field that cannot be read."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            column = self.columns.get(name, name if name != "options" else None)
            if name == "options":
                out[name] = _options(row, column)
            elif isinstance(column, str) and row.get(column) not in (None, ""):
                out[name] = row[column]
            elif name in self.defaults:
                out[name] = self.defaults[name]
        return {k: v for k, v in out.items() if v not in (None, "", {}, [])}


def _options(row: dict, columns: str | list[str] | None) -> dict[str, str]:
    if isinstance(columns, list):  # one column per option, in order A, B, C...
        return {chr(65 + i): str(row[c]).strip() for i, c in enumerate(columns) if str(row.get(c) or "").strip()}
    if isinstance(columns, str):
        value = row.get(columns)
        if isinstance(value, str) and value.strip().startswith(("{", "[")):
            value = json.loads(value)
        if isinstance(value, list):
            return {chr(65 + i): str(v) for i, v in enumerate(value)}
        return dict(value) if isinstance(value, dict) else {}
    if isinstance(row.get("options"), dict):
        return row["options"]
    return {letter: str(row[letter]).strip() for letter in "ABCDE" if str(row.get(letter) or "").strip()}


def to_question_data(fields: dict, subject: str, source: Source) -> dict:
    """Parse the string forms an export uses into Question fields."""
    data: dict[str, Any] = {"subject": subject, "source": source.model_dump(exclude_none=True), **fields}
    for name in ("parts", "final_answers", "images"):
        if isinstance(data.get(name), str):
            data[name] = _json(name, data[name])
    if isinstance(data.get("marks"), str):
        match = re.search(r"\d+", data["marks"])
        if not match:
            raise ValueError(f"marks: {data['marks']!r} is not a number")
        data["marks"] = int(match.group())
    if isinstance(data.get("key"), str):
        data["key"] = data["key"].strip().strip("()[]. ").upper()
    scheme = data.get("mark_scheme")
    if isinstance(scheme, str):
        data["mark_scheme"] = _json("mark_scheme", scheme) if scheme.strip().startswith("{") else _scheme_from_text(scheme, data.get("parts"))
    elif scheme is None and data.get("key") and data.get("options"):
        data["mark_scheme"] = {"points": [{"text": data["key"]}]}  # for an MCQ the key is the scheme
    if data.get("marks") is None and data.get("options"):
        data["marks"] = 1  # an MCQ is worth one mark unless the export says otherwise
    if data.get("marks") is None and isinstance(data.get("parts"), list):
        data["marks"] = sum(p.get("marks") or 0 for p in data["parts"] if isinstance(p, dict))
    return data


def _json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: not valid JSON ({err.msg})") from None


def _scheme_from_text(text: str, parts: Any) -> dict:
    """One marking point per line (or per ';'), '[2]' at the end for a 2-mark point,
    '(a)' at the start to name the part."""
    points = []
    for item in re.split(r"\n|;", text):
        item = item.strip(" -•*\t")
        if not item:
            continue
        marks = re.search(r"\[(\d+)\]\s*$", item)
        part = re.match(r"\(([a-z]+(?:\([ivx]+\))?)\)\s*", item)
        point = {"text": item[part.end() if part else 0 : marks.start() if marks else None].strip() or item}
        if marks:
            point["marks"] = int(marks.group(1))
        if part and parts:
            point["part"] = part.group(1)
        points.append(point)
    return {"points": points}


# --- the import ------------------------------------------------------------------------------


@dataclass
class ImportReport:
    read: int = 0
    imported: int = 0
    duplicate: int = 0
    near_duplicate: int = 0
    rejected: int = 0
    near_pairs: list[NearDuplicate] = field(default_factory=list)
    bank: Path | None = None


def import_questions(kit: SubjectKit, records: Iterable[tuple[str, dict]], bank_dir: Path, mapping: Mapping,
                     near_threshold: float = 0.8, progress: Callable[[], None] | None = None) -> ImportReport:
    """Import every record; see Importer."""
    with Importer(kit, bank_dir, mapping, near_threshold) as importer:
        for where, row in records:
            importer.add(where, row)
            if progress:
                progress()
    return importer.report


class Importer:
    """Adds records to a bank one at a time; `flush()` makes everything added so far durable.

    A scraper flushes after each page before recording the page as collected,
    so a crash can never lose questions from a page it will not fetch again.
    """

    def __init__(self, kit: SubjectKit, bank_dir: Path, mapping: Mapping, near_threshold: float = 0.8):
        self.kit, self.bank_dir, self.mapping = kit, bank_dir, mapping
        bank_dir.mkdir(parents=True, exist_ok=True)
        self.report = ImportReport(bank=bank_dir / QUESTIONS)
        self._seen: set[str] = set()
        self._near = NearDuplicateIndex(near_threshold)
        self._batch: list[Question] = []
        self._header_checked = False

    def __enter__(self) -> Importer:
        import gc

        # The index holds ~1M small objects at 100k questions and none of them
        # form cycles: the cyclic collector would rescan them all, again and again.
        gc.disable()
        if self.report.bank.exists():  # what earlier imports collected: never imported twice
            for _, question in iter_jsonl(self.report.bank, Question, []):
                self._seen.add(question.id)
                self._near.add(question.id, _text(question))
        return self

    def __exit__(self, *exc) -> None:
        import gc

        try:
            self.flush()
        finally:
            gc.enable()

    def add(self, where: str, row: dict) -> None:
        report = self.report
        report.read += 1
        if not self._header_checked:
            self._header_checked = True
            if missing := self.mapping.missing_columns(row):
                raise TutorError(f"{where.rsplit(':', 1)[0]}: no column(s) {missing}; the file has {sorted(row)}")
        question, reason = _question(self.kit, row, where, self.mapping)
        if question is None:
            report.rejected += 1
            file, _, line = where.rpartition(":")
            row = {k: v for k, v in row.items() if k != "__source__"}
            append_jsonl(self.bank_dir / REJECTS, [_Reject(file=file, line=int(line) if line.isdigit() else None, where=where, reason=reason, row=row)])
            return
        if question.id in self._seen:
            report.duplicate += 1
            return
        self._seen.add(question.id)
        if pairs := self._near.add(question.id, _text(question)):
            report.near_duplicate += 1
            report.near_pairs += pairs
            append_jsonl(self.bank_dir / NEAR_DUPLICATES, [_Near(id=p.new_id, similar_to=p.old_id, similarity=p.similarity, where=where) for p in pairs])
        self._batch.append(question)
        report.imported += 1
        if len(self._batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        append_jsonl(self.report.bank, self._batch)
        self._batch.clear()


# Text that addresses a model rather than a student. Hidden copies are already
# dropped with the HTML; a visible one means the page is not a plain question.
_INSTRUCTIONS = re.compile(r"\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|all)\b.{0,20}\b(instructions|prompts?|rules)\b|\bsystem prompt\b", re.IGNORECASE)


def _question(kit: SubjectKit, row: dict, where: str, mapping: Mapping) -> tuple[Question | None, str]:
    if "__error__" in row:
        return None, row["__error__"]
    if "__source__" in row:  # a scraper says where and when
        source = Source.model_validate(row["__source__"])
    else:
        file, _, line = where.rpartition(":")
        source = Source(name=Path(file).name, line=int(line) if line.isdigit() else None)
    try:
        question = Question.model_validate(to_question_data(mapping.apply(row), kit.name, source))
    except (ValueError, ValidationError) as err:
        if isinstance(err, ValidationError):
            return None, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'question'}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors())
        return None, str(err)
    text = _text(question)
    if _INSTRUCTIONS.search(text):
        return None, "the text reads as instructions to a model, not an exam question: check the source by hand"
    problems: list[Problem] = []
    _Checker(kit, problems).question(where, 0, question)
    if problems:
        return None, "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in problems)
    return question, ""


def _text(question: Question) -> str:
    return " ".join([question.stem, *(p.text for p in question.parts), *question.options.values()])


class _Reject(Model):
    """A row that could not become a question: kept, with why, for the user to fix."""

    file: str
    line: int | None
    where: str
    reason: str
    row: dict


class _Near(Model):
    id: str
    similar_to: str
    similarity: float
    where: str
