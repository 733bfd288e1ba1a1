"""The knowledge base: retrieval over a subject's notes, its bank's worked examples and the user's documents.

  <workspace>/<subject>/kb/
    docs/           the user's documents (`kb add` copies them here)
    chroma/         the vector store (Chroma, embedded and persistent; or a Chroma server: [kb] url)
    bm25/           the keyword index (bm25s) and the chunk ids it ranks
    manifest.json   the embedding model it was built with, and its counts

Every chunk is embedded once: `build` adds the chunks it has not seen (by
content digest) and deletes those whose text is gone. A query is answered
by both indexes and the rankings fused by reciprocal rank (RRF, k = 60): the
embeddings find paraphrases, BM25 finds the exact terms a mark scheme uses.

Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..console import say as _say
from ..errors import TutorError
from .documents import Chunk, bank_chunks, check_notes, documents_in, each_document, notes_chunks

if TYPE_CHECKING:
    from ..registry import SubjectKit
    from ..workspace import Workspace

MANIFEST = "manifest.json"
COLLECTION = "chunks"
RRF_K = 60


@dataclass
class Hit:
    text: str
    source: str
    topic: str
    kind: str
    score: float  # the fused (RRF) score
    ranks: dict[str, int | None] = field(default_factory=dict)  # each index's rank of it, from 1; None: not in its top


@dataclass
class Built:
    chunks: int = 0
    added: int = 0
    removed: int = 0
    problems: list[str] = field(default_factory=list)  # documents skipped, one line each
    warnings: list[str] = field(default_factory=list)  # indexed, but something to fix (a note's topic)
    seconds: float = 0.0
    per_kind: dict[str, int] = field(default_factory=dict)


def kb_dir(workspace: Workspace, subject: str) -> Path:
    return workspace.subject_dir(subject) / "kb"


def train_questions(kit: SubjectKit, workspace: Workspace):
    """The bank's questions of the train split and their gold answers, as `dataset build` splits them: an evaluation on
    the held-out splits never retrieves its own answer."""
    from ..dataset import bank_units, choose_bank, plan_split

    bank = choose_bank(kit, workspace)[0]
    split = plan_split(bank_units(bank), workspace.config().train).split
    train = {q.id for q in bank.questions if split.get(q.id) == "train"}
    return [q for q in bank.questions if q.id in train], [a for a in bank.answers if a.question_id in train]


def own_example(question) -> str:
    """The source a bank question's own worked example is cited by: left out when that question is being trained on."""
    return f"bank: {question.id[:12]}"


def retriever(kit: SubjectKit, workspace: Workspace, say: Callable[[str], None] = _say) -> Callable:
    """[train] rag: each question's chunks from the knowledge base, its own worked example left out (it would teach copying)."""
    from ..answers import question_text

    base = KnowledgeBase(workspace, kit.name, say)
    if not base.exists():
        raise TutorError(f"[train] rag = true puts the knowledge base into the prompts, and {kit.name} has none yet: "
                         f"`tutor --subject {kit.name} kb build` first")
    k = workspace.config().kb.k

    def material(question) -> list[Hit]:
        hits = base.search(question_text(question), k + 1)
        return [h for h in hits if h.source != own_example(question)][:k]

    return material


class KnowledgeBase:
    """One subject's knowledge base in a workspace."""

    def __init__(self, workspace: Workspace, subject: str, say: Callable[[str], None] = _say):
        self.workspace, self.subject, self.say = workspace, subject, say
        self.folder = kb_dir(workspace, subject)
        self._embedder = None
        self._opened = None  # the store, opened on first use

    # --- what is there ---------------------------------------------------------------

    @property
    def docs(self) -> Path:
        return self.folder / "docs"

    def exists(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TutorError(f"{self.subject} has no knowledge base yet: `tutor --subject {self.subject} kb build` makes it") from None
        except (OSError, ValueError) as err:
            raise TutorError(f"{self.folder / MANIFEST}: unreadable ({err}): `kb build --rebuild` makes the index again") from None

    def check_index(self, *, keywords: bool = True) -> None:
        """Refuse an index this tutor cannot search: vectors of another embedding model, or (`keywords`) a keyword index
        cut into words another way. `build` skips the second: it makes the keyword index again every time."""
        from .embed import MODEL_ID

        manifest = self.manifest()
        built = manifest.get("embedding")
        if built != MODEL_ID:
            raise TutorError(f"the knowledge base in {self.folder} was built with the embedding model {built!r}, and this tutor embeds "
                             f"with {MODEL_ID!r}: its vectors cannot be compared; `tutor --subject {self.subject} kb build --rebuild`")
        if keywords and manifest.get("keywords") != KEYWORDS:  # queries would be cut into other words than the index was
            raise TutorError(f"the keyword index in {self.folder} was made by an older version of tutor ({manifest.get('keywords')!r}, "
                             f"now {KEYWORDS!r}): `tutor --subject {self.subject} kb build` makes it again (no text is embedded again)")

    # --- adding documents ------------------------------------------------------------

    def add(self, paths: list[Path]) -> tuple[list[Path], list[str]]:
        """Copy documents (files, or every document in folders) into docs/; (what was added, one line per file skipped)."""
        from .documents import SUFFIXES

        added, skipped = [], []
        self.docs.mkdir(parents=True, exist_ok=True)
        for path in paths:
            files = documents_in(path) if path.is_dir() else [path]
            for file in files:
                if file.suffix.lower() not in SUFFIXES:
                    skipped.append(f"{file}: not a document the knowledge base reads ({', '.join(SUFFIXES)})")
                    continue
                target = self.docs / file.name
                staged = target.with_name(f".{target.name}.partial")
                shutil.copyfile(file, staged)
                staged.replace(target)
                added.append(target)
        return added, skipped

    # --- building ----------------------------------------------------------------------

    def chunks(self, kit: SubjectKit, problems: list[str]):
        questions, answers = train_questions(kit, self.workspace)
        yield from bank_chunks(questions, answers)
        yield from notes_chunks(kit.subject.notes)
        if self.docs.is_dir():
            yield from each_document(documents_in(self.docs), lambda p: f"doc: {p.name}", problems)

    def build(self, kit: SubjectKit, *, rebuild: bool = False, progress: Callable[..., None] | None = None, batch: int = 64) -> Built:
        from .embed import DIMENSIONS, MODEL_ID

        started = time.monotonic()
        if rebuild and self.folder.exists():
            for part in ("chroma", "bm25", MANIFEST):
                target = self.folder / part
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        elif self.exists():
            self.check_index(keywords=False)
        self.folder.mkdir(parents=True, exist_ok=True)
        store = self._store()
        have = store.ids()
        built = Built(warnings=check_notes(kit.subject.notes, list(kit.subject.topics)))
        seen: dict[str, Chunk] = {}
        pending: list[Chunk] = []

        def flush():
            vectors = self._embed([c.text for c in pending])
            store.upsert(pending, vectors)
            built.added += len(pending)
            if progress:
                progress(advance=len(pending))
            pending.clear()

        for chunk in self.chunks(kit, built.problems):
            if chunk.id in seen:
                continue
            seen[chunk.id] = chunk
            built.per_kind[chunk.kind] = built.per_kind.get(chunk.kind, 0) + 1
            if chunk.id not in have:
                pending.append(chunk)
                if len(pending) >= batch:
                    flush()
        if pending:
            flush()
        gone = have - set(seen)
        store.delete(sorted(gone))
        built.removed, built.chunks = len(gone), len(seen)
        _save_bm25(self.folder / "bm25", list(seen.values()))
        manifest = {"embedding": MODEL_ID, "dimensions": DIMENSIONS, "keywords": KEYWORDS, "chunks": built.chunks,
                    "per_kind": built.per_kind,
                    "built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "store": self._where()}
        from ..jsonl import write_atomic

        write_atomic(self.folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        built.seconds = round(time.monotonic() - started, 1)
        return built

    # --- searching -------------------------------------------------------------------

    def search(self, query: str, k: int = 5, mode: str = "hybrid") -> list[Hit]:
        """The k best chunks for `query`: hybrid (RRF of both), dense (embeddings only) or bm25 (keywords only)."""
        self.check_index()
        depth = max(k * 4, 20)
        rankings: dict[str, list[str]] = {}
        if mode in ("hybrid", "dense"):
            rankings["dense"] = self._store().query(self._embed([query])[0], depth)
        if mode in ("hybrid", "bm25"):
            rankings["bm25"] = _query_bm25(self.folder / "bm25", query, depth)
        fused: dict[str, float] = {}
        for ranking in rankings.values():
            for rank, chunk_id in enumerate(ranking, 1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        found = self._store().get(best)
        hits = []
        for chunk_id in best:
            if chunk_id not in found:
                continue
            text, meta = found[chunk_id]
            ranks = {name: (ranking.index(chunk_id) + 1 if chunk_id in ranking else None) for name, ranking in rankings.items()}
            hits.append(Hit(text, meta.get("source", ""), meta.get("topic", ""), meta.get("kind", ""), round(fused[chunk_id], 5), ranks))
        return hits

    def stats(self) -> dict[str, Any]:
        manifest = self.manifest()
        manifest["stored"] = self._store().count()
        manifest["documents"] = len(documents_in(self.docs)) if self.docs.is_dir() else 0
        return manifest

    # --- parts -----------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> list[list[float]]:
        if self._embedder is None:
            from .embed import Embedder

            self._embedder = Embedder(self.say)
        return self._embedder(texts)

    def _where(self) -> str:
        return self.workspace.config().kb.url or str(self.folder / "chroma")

    def _store(self):
        from .store import ChromaStore

        if self._opened is None:
            self._opened = ChromaStore(self.folder / "chroma", self.workspace.config().kb.url, self.subject)
        return self._opened


KEYWORDS = "bm25s, English stop words, Snowball English stems"  # how _tokens cuts text; the manifest records it


def _tokens(texts: list[str]):
    """Words for BM25: lower-cased, English stop words dropped, and stemmed, so "charging" finds "charge" and "reacts"
    finds "reaction" (bench/kb.py: R@5 on questions in a student's own words 0.84 -> 0.86 for BM25, 0.86 -> 0.92 hybrid)."""
    import bm25s
    import Stemmer

    return bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)


def _save_bm25(folder: Path, chunks: list[Chunk]) -> None:
    import bm25s

    from ..jsonl import write_atomic

    staged = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staged, ignore_errors=True)
    retriever = bm25s.BM25()
    if chunks:
        retriever.index(_tokens([c.text for c in chunks]), show_progress=False)
    retriever.save(str(staged))
    write_atomic(staged / "ids.json", json.dumps([c.id for c in chunks]))
    shutil.rmtree(folder, ignore_errors=True)
    staged.rename(folder)


def _query_bm25(folder: Path, query: str, depth: int) -> list[str]:
    import bm25s

    try:
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        if not ids:
            return []
        retriever = bm25s.BM25.load(str(folder))
    except (OSError, ValueError) as err:
        raise TutorError(f"{folder}: the keyword index is unreadable ({err}): `kb build --rebuild` makes it again") from None
    tokens = _tokens([query])
    if not tokens.vocab:
        return []
    results, scores = retriever.retrieve(tokens, k=min(depth, len(ids)), show_progress=False)
    return [ids[int(i)] for i, s in zip(results[0], scores[0]) if s > 0]
