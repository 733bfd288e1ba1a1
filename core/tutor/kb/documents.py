"""What goes into a knowledge base, as chunks: the bank's train split, the subject's notes, the user's documents.

A chunk is a heading's section, or a paragraph of it, at most MAX_CHARS long,
with where it came from (`source`, e.g. 'notes: forces.md') and its topic. Its
id is a digest of both, so an index adds only the chunks it has not seen and
drops those whose text is gone. Documents are read a paragraph at a time
(text and Markdown line by line, PDF page by page), so a 50 MB file is
chunked in bounded memory.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import TutorError

MAX_CHARS = 1200  # about 300 tokens: within the embedding model's 256-word-piece window, mostly; longer is split
SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")
_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")


@dataclass(frozen=True)
class Chunk:
    text: str
    source: str  # what an answer cites: 'notes: forces.md', 'bank: 2e1fe387d121', 'doc: syllabus.pdf p. 4'
    topic: str = ""
    kind: str = "doc"  # bank | notes | doc

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.source}\0{self.text}".encode()).hexdigest()[:20]


class Unreadable(TutorError):
    """A document that cannot be read as text: one line, and the rest is indexed."""


def paragraphs_of(lines: Iterable[str]) -> Iterator[tuple[list[str], str]]:
    """(the headings above it, a paragraph) for Markdown or text read line by line; front matter is skipped."""
    headings: list[str] = []
    buffer: list[str] = []
    lines = iter(lines)
    first = next(lines, None)
    if first is not None and first.strip() == "---":  # front matter: metadata, not text
        for line in lines:
            if line.strip() == "---":
                break
    elif first is not None:
        lines = itertools.chain([first], lines)
    for line in lines:
        heading = _HEADING.match(line)
        if heading or not line.strip():
            if buffer:
                yield list(headings), " ".join(buffer).replace(" \n", "\n")
                buffer = []
            if heading:
                level = len(heading.group(1))
                headings = headings[: level - 1] + [heading.group(2)]
            continue
        item = re.match(r"\s*([-*+]|\d+[.)])\s", line)
        buffer.append(("\n" if item and buffer else "") + line.strip())
    if buffer:
        yield list(headings), " ".join(buffer).replace(" \n", "\n")


def front_matter(path: Path) -> dict[str, str]:
    """`key: value` lines between the first two '---' lines of a Markdown file (the notes' topic)."""
    return {key: value for key, (value, _) in _front_matter_lines(path).items()}


def _front_matter_lines(path: Path) -> dict[str, tuple[str, int]]:
    """key -> (value, its line number) of the front matter; {} when the file has none."""
    found: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        if handle.readline().strip() != "---":
            return found
        for number, line in enumerate(handle, 2):
            if line.strip() == "---":
                break
            key, sep, value = line.partition(":")
            if sep:
                found[key.strip()] = (value.strip().strip("\"'"), number)
    return found


def chunks_of(paragraphs: Iterable[tuple[list[str], str]], source: str, topic: str, kind: str) -> Iterator[Chunk]:
    """Paragraphs joined under their heading up to MAX_CHARS; a longer paragraph is split at sentence ends."""
    pending: list[str] = []
    pending_headings: list[str] | None = None

    def flush() -> Iterator[Chunk]:
        if pending:
            title = " > ".join(pending_headings or [])
            yield Chunk((f"{title}\n" if title else "") + "\n".join(pending), source, topic, kind)
            pending.clear()

    for headings, text in paragraphs:
        if headings != pending_headings or sum(map(len, pending)) + len(text) > MAX_CHARS:
            yield from flush()
            pending_headings = headings
        for piece in _split(text):
            if sum(map(len, pending)) + len(piece) > MAX_CHARS:
                yield from flush()
            pending.append(piece)
    yield from flush()


def _split(text: str) -> list[str]:
    if len(text) <= MAX_CHARS:
        return [text]
    pieces, current = [], ""
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        while len(sentence) > MAX_CHARS:  # one enormous "sentence": cut it
            pieces.append(sentence[:MAX_CHARS])
            sentence = sentence[MAX_CHARS:]
        if len(current) + len(sentence) + 1 > MAX_CHARS and current:
            pieces.append(current)
            current = ""
        current = f"{current} {sentence}".strip()
    return pieces + ([current] if current else [])


def read_document(path: Path, source: str, topic: str = "", kind: str = "doc") -> Iterator[Chunk]:
    """The chunks of one Markdown, text, HTML or PDF file; Unreadable for an empty, binary or encrypted one."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise Unreadable(f"{path}: not a document the knowledge base reads ({', '.join(SUFFIXES)})")
    try:
        if path.stat().st_size == 0:
            raise Unreadable(f"{path}: empty")
        if suffix == ".pdf":
            yield from _pdf(path, source, topic, kind)
            return
        with open(path, "rb") as handle:
            if b"\0" in handle.read(8192):
                raise Unreadable(f"{path}: binary, not text")
        if suffix in (".html", ".htm"):
            yield from chunks_of(_html(path), source, topic, kind)
            return
        with open(path, encoding="utf-8", errors="replace") as handle:
            yield from chunks_of(paragraphs_of(handle), source, topic or front_matter(path).get("topic", ""), kind)
    except OSError as err:
        raise Unreadable(f"{path}: {err.strerror or err}") from None


def _html(path: Path) -> Iterator[tuple[list[str], str]]:
    from bs4 import BeautifulSoup

    from ..scrape import html_to_text

    soup = BeautifulSoup(path.read_text(encoding="utf-8", errors="replace"), "html.parser")
    headings: list[str] = []
    for element in soup.find_all(["h1", "h2", "h3", "h4", "p", "li", "pre", "td"]):
        text = html_to_text(element).strip()
        if not text:
            continue
        if element.name in ("h1", "h2", "h3", "h4"):
            level = int(element.name[1])
            headings = headings[: level - 1] + [text]
        else:
            yield list(headings), " ".join(text.split())


def _pdf(path: Path, source: str, topic: str, kind: str) -> Iterator[Chunk]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise Unreadable(f"{path}: encrypted PDF (decrypt it first)")
        pages = len(reader.pages)
    except (PdfReadError, ValueError, KeyError) as err:
        raise Unreadable(f"{path}: not a readable PDF ({err})") from None
    found = False
    for number in range(pages):  # a page at a time: memory stays bounded however long the PDF
        try:
            text = reader.pages[number].extract_text() or ""
        except Exception as err:  # noqa: BLE001 - pypdf raises many kinds for one broken page; the others are kept
            raise Unreadable(f"{path}: page {number + 1} unreadable ({type(err).__name__})") from None
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
        for chunk in chunks_of((([], p) for p in paragraphs), f"{source} p. {number + 1}", topic, kind):
            found = True
            yield chunk
    if not found:
        raise Unreadable(f"{path}: no text in it (a scanned PDF needs OCR first)")


def notes_chunks(notes: Path | None) -> Iterator[Chunk]:
    """A subject's notes/*.md, one topic per file, cited as 'notes: <file>'."""
    if notes is None or not Path(notes).is_dir():
        return
    for path in sorted(Path(notes).glob("*.md")):
        yield from read_document(path, f"notes: {path.name}", kind="notes")


def check_notes(notes: Path | None, topics: list[str]) -> list[str]:
    """file:line for each note whose front matter names no topic, or one the subject does not have: its chunks are
    still indexed, but retrieval measured by topic (and a reader) cannot place them."""
    found = []
    for path in sorted(Path(notes).glob("*.md")) if notes is not None and Path(notes).is_dir() else []:
        topic, line = _front_matter_lines(path).get("topic", (None, 1))
        if topic is None:
            found.append(f"{path}:1: no `topic:` in its front matter (---, topic: one of {', '.join(topics)}, ---)")
        elif topic not in topics:
            found.append(f"{path}:{line}: topic {topic!r} is not one of the subject's topics: {', '.join(topics)}")
    return found


def bank_chunks(questions, answers) -> Iterator[Chunk]:
    """Worked examples: each question with its mark scheme and gold answer, cited as 'bank: <id prefix>'."""
    from ..answers import question_text

    gold = {}
    for answer in answers:
        gold.setdefault(answer.question_id, answer.text)
    for question in questions:
        scheme = "\n".join(f"- {p.text}" for p in getattr(question.mark_scheme, "points", []) or [])
        parts = [f"Question ({question.marks} marks): {question_text(question)}"]
        if scheme:
            parts.append(f"Mark scheme:\n{scheme}")
        if question.id in gold:
            parts.append(f"Full-mark answer: {gold[question.id]}")
        text = "\n".join(parts)
        yield Chunk(text[: MAX_CHARS * 3], f"bank: {question.id[:12]}", question.topic, "bank")


def documents_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def each_document(paths: list[Path], source: Callable[[Path], str], problems: list[str]) -> Iterator[Chunk]:
    """Every chunk of every document; an unreadable one is a line in `problems`, and the rest go on."""
    for path in paths:
        try:
            yield from read_document(path, source(path))
        except Unreadable as err:
            problems.append(str(err))
