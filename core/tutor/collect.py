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
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .answers import question_text
from .bank import QUESTIONS, _Checker
from .errors import Problem, TutorError
from .jsonl import NEWLINES, append_jsonl, import_dicts, iter_jsonl, repair_tail, text_lines
from .models import Model, Question, Source
from .neardup import NearDuplicate, NearDuplicateIndex
from .registry import SubjectKit

REJECTS, NEAR_DUPLICATES = "rejects.jsonl", "near-duplicates.jsonl"
FIELDS = ("stem", "type", "topic", "marks", "options", "key", "mark_scheme", "parts", "final_answers", "images")
BATCH = 500  # questions per fsynced append: a crash loses at most one batch, which a re-run restores


# --- the core's file sources --------------------------------------------------------------


# csv's default limit on a cell is 128 KiB: past it, it raises from inside the reader and the
# rest of the file is lost. Reading goes up to READ_LIMIT, so a big cell costs only its row.
CELL_LIMIT = 128 * 1024  # characters in one cell: more is a pasted file or a stray quote, not a question
READ_LIMIT = 16 * 2**20  # characters csv reads into one cell at all: more, and the file is not a bank
ROW_LIKE = 2  # whole rows inside one quoted cell that make it a quote left open, not a cell with line breaks


def read_csv(location: str, encoding: str = "utf-8-sig", delimiter: str | None = None) -> Iterator[tuple[str, dict]]:
    """Rows of a CSV file as dicts, each with "file:line" of its first line.

    Streams (a 100k-row file never sits in memory), sniffs , ; tab or | as the
    delimiter, strips a UTF-8 BOM, and keeps newlines inside quoted cells.
    The whole file is read once before the first row is yielded: a wrong
    encoding or a quote left open is a problem of the file, reported with its
    real line before anything is imported. A row that only its own line
    spoils (a quote closed in the wrong place, a cell over CELL_LIMIT) comes
    out as {"__error__": why, ...} and goes to the rejects; the rows after it
    are read as usual.
    """
    path = Path(location)
    csv.field_size_limit(READ_LIMIT)
    delimiter = delimiter or _sniff(path, encoding)
    _check_csv(path, encoding, delimiter)
    header: list[str] | None = None
    for record in _csv_records(path, encoding, delimiter):
        where = f"{path}:{record.first}"
        if record.fields == []:
            continue  # a blank line
        if record.fields is None:  # _check_csv let it through: one line, so one row, is spoilt
            hint = 'a quoted cell must end at its closing quote; write a quote inside one as ""'
            yield where, {"__error__": f"not valid CSV: {record.error} ({hint})", "text": "".join(record.lines).rstrip("\r\n")}
            continue
        if header is None:
            header = [name.strip() for name in record.fields]
            continue
        # Like csv.DictReader: cells past the header are dropped, missing ones are None.
        row = {name: record.fields[i] if i < len(record.fields) else None for i, name in enumerate(header)}
        big = [(name, len(value)) for name, value in row.items() if value and len(value) > CELL_LIMIT]
        if big:
            name, size = big[0]
            row = {k: f"{v[:200]}... ({len(v):,} characters)" if v and len(v) > CELL_LIMIT else v for k, v in row.items()}
            yield where, {**row, "__error__": f"column {name!r} holds {size:,} characters, more than the {CELL_LIMIT:,} a cell may have"}
            continue
        yield where, row


@dataclass
class _Record:
    """One CSV record and the physical lines it came from."""

    first: int
    last: int
    fields: list[str] | None  # None when csv could not parse it
    error: str
    lines: list[str]


def _csv_records(path: Path, encoding: str, delimiter: str) -> Iterator[_Record]:
    lines: list[str] = []  # the physical lines of the record being read

    def feed() -> Iterator[str]:
        for line in text_lines(path, encoding, NEWLINES):
            lines.append(line)
            yield line

    # strict: a quote closed in the wrong place is an error, not glued quietly onto the cell.
    # After an error the reader starts afresh on the next line, so one bad row costs one row.
    reader = csv.reader(feed(), delimiter=delimiter, strict=True)
    last = 0
    while True:
        try:
            fields, error = next(reader), ""
        except StopIteration:
            return
        except csv.Error as err:
            fields, error = None, str(err)
        first, last = last + 1, reader.line_num
        yield _Record(first, last, fields, error, lines)
        lines.clear()


def _check_csv(path: Path, encoding: str, delimiter: str) -> None:
    """Read the whole file once; raise for what spoils the file rather than one row.

    A stray quote makes csv read on across line breaks, taking the rows below
    into one cell, until a later quote happens to end it: a record that fails
    after spanning lines, one that ends inside quotes, or one whose cell holds
    lines that read as whole rows of this file is a quote left open.
    """
    columns = 0
    for record in _csv_records(path, encoding, delimiter):
        spans = record.last > record.first
        if record.error.startswith("field larger than field limit") and not spans:
            raise TutorError(f"{path}:{record.first}: a cell on line {record.first} holds more than {READ_LIMIT:,} characters; "
                             "nothing was imported from this file")
        unclosed = bool(record.error) and (spans or record.error == "unexpected end of data")
        if record.error and not unclosed and not columns:
            raise TutorError(f"{path}:{record.first}: the header is not valid CSV: {record.error}; nothing was imported from this file")
        if record.fields and not columns:
            columns = len(record.fields)
        elif record.fields and spans and columns >= 3:  # with fewer, a line of prose reads as a row too easily
            swallowed = sum(_field_count(line, delimiter) == columns for line in record.lines[1:-1])
            unclosed = swallowed >= ROW_LIKE
        if unclosed:
            end = f"the end of the file, line {record.last}" if record.error == "unexpected end of data" else f"line {record.last}"
            raise TutorError(f"{path}:{record.first}: unclosed quote starting at line {record.first} (it runs to {end}); "
                             "nothing was imported from this file")


def _field_count(line: str, delimiter: str) -> int:
    try:
        return len(next(csv.reader([line], delimiter=delimiter), []))
    except csv.Error:
        return 0


def _sniff(path: Path, encoding: str) -> str:
    sample: list[str] = []
    for line in text_lines(path, encoding, NEWLINES):
        sample.append(line)
        if sum(map(len, sample)) >= 65536:
            break
    try:
        return csv.Sniffer().sniff("".join(sample)[:65536], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_jsonl_records(location: str, encoding: str = "utf-8-sig", **_: Any) -> Iterator[tuple[str, dict]]:
    """Objects of a JSON Lines file, each with "file:line"; a bad line yields {"__error__": why}.

    The file's encoding is checked whole before the first record (jsonl.import_dicts).
    """
    path = Path(location)
    for number, record, why in import_dicts(path, encoding):
        yield f"{path}:{number}", record if record is not None else {"__error__": why}


# --- mapping a foreign record onto the Question schema ----------------------------------


@dataclass
class Mapping:
    """Which of their columns holds each of our fields, and defaults for missing ones.

    TOML form (see docs/collecting.md):
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
                listed = name.strip() == "options" and "," in value
                target[name.strip()] = [v.strip() for v in value.split(",")] if listed else value.strip()
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
        is_json = scheme.strip().startswith("{")
        data["mark_scheme"] = _json("mark_scheme", scheme) if is_json else _scheme_from_text(scheme, data.get("parts"))
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
    already_rejected: int = 0  # of the rejected, those an earlier run recorded (same place, same row)
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


def import_file(kit: SubjectKit, bank_dir: Path, file: Path, mapping: Mapping, *, source: str | None = None,
                encoding: str = "utf-8-sig", delimiter: str | None = None, near_threshold: float = 0.8,
                progress: Callable[[], None] | None = None) -> ImportReport:
    """Import one CSV or JSON Lines export (`source`: a question source's name; default by extension) into a bank folder."""
    from .errors import UnknownName
    from .registry import registry

    sources = registry().sources
    name = source or ("jsonl" if Path(file).suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv")
    if name not in sources:
        raise UnknownName("question source", name, list(sources))
    options = {"encoding": encoding} | ({"delimiter": delimiter} if delimiter else {})
    report = import_questions(kit, sources[name].fetch(str(file), **options), bank_dir, mapping, near_threshold, progress)
    if report.read == 0:
        raise TutorError(f"{file}: no records found")
    return report


@dataclass
class ScrapeReport(ImportReport):
    requests: int = 0
    from_cache: int = 0


def scrape_site(kit: SubjectKit, bank_dir: Path, cache_dir: Callable[[str], Path], site: Path, *, delay: float | None = None,
                progress: Callable[[], None] | None = None) -> ScrapeReport:
    """Scrape the site a TOML file describes into a bank folder; pages are cached under cache_dir(site name), so a re-run resumes."""
    from dataclasses import asdict

    from .errors import UnknownName
    from .registry import registry
    from .scrape import Session, SiteConfig

    config = SiteConfig.load(site)
    sources = registry().sources
    if config.adapter not in sources:
        raise UnknownName("question source", config.adapter, list(sources))
    if delay is not None:
        config = config.model_copy(update={"delay": delay})
    session = Session(config, cache_dir(config.name))
    mapping = Mapping.build(defaults=[f"{k}={v}" for k, v in config.defaults.items()])
    try:
        with Importer(kit, bank_dir, mapping) as importer:
            for where, record in sources[config.adapter].fetch(config.start, session=session, images_dir=bank_dir / "images"):
                importer.add(where, record)
                if progress:
                    progress()
    except KeyboardInterrupt:
        raise TutorError(f"interrupted after {session.requests} requests; everything collected is saved: "
                         "run the same command to resume") from None
    finally:
        session.close()
    return ScrapeReport(**asdict(importer.report), requests=session.requests, from_cache=session.from_cache)


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
        self._rejected: set[bytes] = set()  # keys of the rejects on record, so a re-run adds none twice

    def __enter__(self) -> Importer:
        import gc

        # The index holds ~1M small objects at 100k questions and none of them
        # form cycles: the cyclic collector would rescan them all, again and again.
        gc.disable()
        # A crash mid-append leaves a torn last line; cut it off first, or the next record is glued
        # onto it, counted as imported, and the file fails validation for good. (Teach does the same.)
        for name in (QUESTIONS, REJECTS, NEAR_DUPLICATES):
            repair_tail(self.bank_dir / name)
        if self.report.bank.exists():  # what earlier imports collected: never imported twice
            for _, question in iter_jsonl(self.report.bank, Question, []):
                self._seen.add(question.id)
                self._near.add(question.id, question_text(question))
        if (self.bank_dir / REJECTS).exists():
            for _, reject in iter_jsonl(self.bank_dir / REJECTS, _Reject, []):
                self._rejected.add(_reject_key(reject.where, reject.row))
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
        if not self._header_checked and "__error__" not in row:  # a row that could not be read has no columns to check
            self._header_checked = True
            if missing := self.mapping.missing_columns(row):
                raise TutorError(f"{where.rsplit(':', 1)[0]}: no column(s) {missing}; the file has {sorted(row)}")
        question, reason = _question(self.kit, row, where, self.mapping)
        if question is None:
            report.rejected += 1
            file, _, line = where.rpartition(":")
            row = {k: v for k, v in row.items() if k not in ("__source__", "__error__")}
            key = _reject_key(where, row)
            if key in self._rejected:  # the same row from the same place: re-running an import
                report.already_rejected += 1
                return
            self._rejected.add(key)
            reject = _Reject(file=file, line=int(line) if line.isdigit() else None, where=where, reason=reason, row=row)
            append_jsonl(self.bank_dir / REJECTS, [reject])
            return
        if question.id in self._seen:
            report.duplicate += 1
            return
        self._seen.add(question.id)
        if pairs := self._near.add(question.id, question_text(question)):
            report.near_duplicate += 1
            report.near_pairs += pairs
            near = [_Near(id=p.new_id, similar_to=p.old_id, similarity=p.similarity, where=where) for p in pairs]
            append_jsonl(self.bank_dir / NEAR_DUPLICATES, near)
        self._batch.append(question)
        report.imported += 1
        if len(self._batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        append_jsonl(self.report.bank, self._batch)
        self._batch.clear()


# Text that addresses a model rather than a student. Hidden copies are already
# dropped with the HTML; a visible one means the page is not a plain question.
_INSTRUCTIONS = re.compile(r"\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|all)\b.{0,20}\b(instructions|prompts?|rules)\b"
                           r"|\bsystem prompt\b", re.IGNORECASE)


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
            return None, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'question'}: {e['msg'].removeprefix('Value error, ')}"
                                   for e in err.errors())
        return None, str(err)
    text = question_text(question)
    if _INSTRUCTIONS.search(text):
        return None, "the text reads as instructions to a model, not an exam question: check the source by hand"
    problems: list[Problem] = []
    _Checker(kit, problems).question(where, 0, question)
    if problems:
        return None, "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in problems)
    return question, ""


def _reject_key(where: str, row: dict) -> bytes:
    """Where a reject came from ("file:line" or a URL) and its row: a digest, as rejects can be many."""
    return hashlib.sha256(json.dumps([where, row], sort_keys=True, ensure_ascii=False, default=str).encode()).digest()


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
