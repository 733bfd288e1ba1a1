"""JSON Lines, the workspace's record format: the one reader, atomic and append-only writes, the one repair.

Every JSON Lines file is read here, in one of three modes:
  - iter_jsonl: validated records; every problem collected with its file,
    line and field instead of stopping at the first, so one run of `bank
    validate` shows everything to fix;
  - iter_dicts: plain objects, skipping lines that do not parse: for logs and
    done-lists a crash may have torn, which must not stop a run;
  - import_dicts: a user's file in a given encoding, checked whole before the
    first record (a wrong encoding is the file's problem, not a line's), each
    line's object or why it is not one.
Reads stream line by line: a 100k-row bank never sits in memory as text.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .errors import Problem, TutorError, ValidationFailed

M = TypeVar("M", bound=BaseModel)

# mkstemp creates files readable by the owner only; written records should get
# the permissions any other new file would. Read the umask once (it can only be
# read by setting it).
_UMASK = os.umask(0)
os.umask(_UMASK)
LINE_LIMIT = 64 * 2**20  # characters on one physical line of an imported file, so a file without line breaks cannot fill memory
NEWLINES = re.compile(r"\r\n|\r|\n")  # what csv (and an editor) count as line breaks
LF = re.compile(r"\n")  # JSON Lines: a raw \r can only be whitespace inside a record
TORN = ("a torn last line (no newline, not valid JSON): a write was interrupted; "
        "the next `collect import` or `teach` run that writes this file removes it")


# --- the pieces every mode shares -------------------------------------------------------------


def raw_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, the line's bytes with its newline) for every line of a file."""
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, offset, raw
            offset += len(raw)


def parse_object(text: str | bytes) -> tuple[dict | None, str]:
    """One line's JSON object, or (None, why it is not one)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        # Some of json's messages end in "at" already ("Invalid control character at"): one "at", not two.
        return None, f"not valid JSON: {err.msg.removesuffix(' at')} at column {err.colno}"
    except ValueError as err:  # bytes in no encoding json.loads knows
        return None, f"not valid JSON: {err}"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    return data, ""


# --- validated records ------------------------------------------------------------------------


def iter_jsonl(path: Path, model: type[M], problems: list[Problem]) -> Iterator[tuple[int, M]]:
    """Yield (line number, record) for each valid line; append a Problem for each bad one."""
    name = str(path)
    seen: dict[str, int] = {}
    empty = True
    for number, _, raw in raw_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(Problem(name, number, None, f"not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})"))
            empty = False
            continue
        if not text.strip():
            continue
        empty = False
        data, why = parse_object(text)
        if data is None:
            torn = why.startswith("not valid JSON") and not raw.endswith(b"\n")  # only the last line can lack one: an append cut short
            problems.append(Problem(name, number, None, TORN if torn else why))
            continue
        try:
            record = model.model_validate(data)
        except ValidationError as err:
            problems.extend(Problem(name, number, _field(e["loc"]), _message(e)) for e in err.errors())
            continue
        record_id = getattr(record, "id", None)
        if record_id:
            if record_id in seen:
                problems.append(Problem(name, number, "id", f"duplicate id {record_id!r}, first on line {seen[record_id]}"))
                continue
            seen[record_id] = number
        yield number, record
    if empty:
        problems.append(Problem(name, None, None, "file is empty"))


def read_jsonl(path: Path, model: type[M]) -> list[M]:
    """All records of a file, or ValidationFailed listing every problem."""
    problems: list[Problem] = []
    records = [record for _, record in iter_jsonl(Path(path), model, problems)]
    if problems:
        raise ValidationFailed(problems)
    return records


# --- plain objects, tolerant of what a crash leaves --------------------------------------------


def iter_dicts(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each line that is a JSON object; other lines (torn, garbled, blank) are skipped.

    For files the tool itself appends to (logs, done-lists): a crash's torn
    line there must not stop a run. Nothing, if the file does not exist.
    """
    if not Path(path).exists():
        return
    for number, _, raw in raw_lines(path):
        if raw.strip():
            data, _ = parse_object(raw)
            if data is not None:
                yield number, data


def field_counts(path: Path, field_name: str, where: Callable[[dict], bool] = lambda record: True) -> Counter:
    """How often each value of one field occurs over a JSON Lines file (in the records `where` picks)."""
    found: Counter = Counter()
    for _, record in iter_dicts(path):
        if where(record) and (value := record.get(field_name)):
            found[value] += 1
    return found


# --- a user's file to import, in its own encoding ----------------------------------------------


def import_dicts(path: Path, encoding: str = "utf-8-sig") -> Iterator[tuple[int, dict | None, str]]:
    """(line number, object or None, why not) for every non-blank line of a JSON Lines file in `encoding`.

    Like a CSV file, the whole file's encoding is checked before the first
    record: a file in another encoding than the user said is wrong as a
    whole, and importing the lines that happen to decode would split it.
    Raises TutorError, naming the line and column, when it is not `encoding`.
    """
    for _ in text_lines(path, encoding, LF):
        pass
    for number, line in enumerate(text_lines(path, encoding, LF), start=1):
        if line.strip():
            yield number, *parse_object(line)


def text_lines(path: Path, encoding: str, newline: re.Pattern) -> Iterator[str]:
    """The file's physical lines, line breaks kept, decoded as they stream past.

    A byte that is not valid `encoding` stops everything, naming its real line
    and column: io's text wrapper decodes 8 KiB at a time, so its errors
    cannot say where they are.
    """
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise TutorError(f"unknown encoding {encoding!r}; e.g. utf-8, gbk, cp1252, latin-1") from None
    number, pending = 1, ""  # pending: a line whose end has not been read yet
    with open(path, "rb") as handle:
        while True:
            raw = handle.readline(1 << 20)  # by line, so the pending text stays one line long
            try:
                pending += decoder.decode(raw, final=not raw)
            except UnicodeError as err:
                raise _not_encoding(path, encoding, number, pending, err) from None
            start = 0
            for match in newline.finditer(pending):
                if match.group() == "\r" and match.end() == len(pending) and raw:
                    break  # maybe the first half of a \r\n: wait for the rest
                yield pending[start:match.end()]
                number, start = number + 1, match.end()
            pending = pending[start:]
            if len(pending) > LINE_LIMIT:
                raise TutorError(f"{path}:{number}: line {number} is longer than {LINE_LIMIT:,} characters; is this a text file? "
                                 "Nothing was imported from this file")
            if not raw:
                if pending:
                    yield pending
                return


def _not_encoding(path: Path, encoding: str, number: int, pending: str, err: UnicodeError) -> TutorError:
    """The error for a byte that is not `encoding`, at its line and column (what an editor shows)."""
    if isinstance(err, UnicodeDecodeError):
        try:
            before = pending + err.object[:err.start].decode(encoding, errors="replace")
        except UnicodeError:  # e.g. the middle of a UTF-16 file, which has no byte order mark
            before = pending
        lines = NEWLINES.split(before)
        number += len(lines) - 1
        what = f"byte {err.object[err.start]:#04x} at column {len(lines[-1]) + 1}"
    else:
        what = str(err)
    return TutorError(f"{path}:{number}: not valid {encoding} ({what}); nothing was imported; pass --encoding, e.g. --encoding gbk")


# --- writing ---------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    """Replace a file atomically: readers see the old file or the new one, never half of one."""
    write_atomic(path, "".join(dumps(record) + "\n" for record in records))


def append_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    """Append records and fsync, so a crash loses at most the line being written."""
    append_lines(path, [dumps(record) for record in records])


def write_atomic(path: Path, text: str) -> None:
    """Write a text file by temp file, fsync and rename, with the umask's permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_lines(path: Path, lines: Iterable[str]) -> None:
    """Append lines and fsync: the append-only half of the storage rules.

    Appending nothing creates nothing: an empty bank file left by a failed
    import would read as "file is empty" instead of "import first".
    """
    lines = list(lines)
    if not lines:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def repair_tail(path: Path) -> None:
    """Cut off a torn last line (a crash mid-append), so the next append starts a line of its own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        size = handle.seek(0, os.SEEK_END)
        keep = 0
        while size > 0:  # find the last newline, reading backwards in blocks
            start = max(0, size - 65536)
            handle.seek(start)
            block = handle.read(size - start)
            if (cut := block.rfind(b"\n")) >= 0:
                keep = start + cut + 1
                break
            size = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())


def dumps(record: BaseModel) -> str:
    return json.dumps(record.model_dump(mode="json", exclude_defaults=True), ensure_ascii=False)


def _field(loc: tuple) -> str | None:
    return ".".join(str(part) for part in loc) or None


def _message(error: dict) -> str:
    message = error["msg"]
    # pydantic prefixes messages from our own validators; the prefix is noise to a user.
    return message.removeprefix("Value error, ")
