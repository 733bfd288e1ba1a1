"""JSON Lines, the workspace's record format: validated reads, atomic and append-only writes.

Reads stream line by line (a 100k-row bank never sits in memory as text) and
collect every problem with its file, line and field instead of stopping at
the first, so one run of `bank validate` shows everything to fix.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .errors import Problem, ValidationFailed

M = TypeVar("M", bound=BaseModel)

# mkstemp creates files readable by the owner only; written records should get
# the permissions any other new file would. Read the umask once (it can only be
# read by setting it).
_UMASK = os.umask(0)
os.umask(_UMASK)


def iter_jsonl(path: Path, model: type[M], problems: list[Problem]) -> Iterator[tuple[int, M]]:
    """Yield (line number, record) for each valid line; append a Problem for each bad one."""
    name = str(path)
    seen: dict[str, int] = {}
    empty = True
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(Problem(name, number, None, f"not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})"))
                empty = False
                continue
            if not text.strip():
                continue
            empty = False
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                why = f"not valid JSON: {err.msg} at column {err.colno}"
                if not raw.endswith(b"\n"):  # only the last line can lack one: an append cut short
                    why = ("a torn last line (no newline, not valid JSON): a write was interrupted; "
                           "the next `collect import` or `teach` run that writes this file removes it")
                problems.append(Problem(name, number, None, why))
                continue
            if not isinstance(data, dict):
                problems.append(Problem(name, number, None, f"expected a JSON object, got {type(data).__name__}"))
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
