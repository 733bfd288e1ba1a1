"""The vector store behind the knowledge base: Chroma, embedded and persistent, or a Chroma server ([kb] url).

Kept to the five calls the knowledge base makes (ids, upsert, delete, query,
get, count), so another store is one class. The collection is created with
no embedding function of Chroma's: vectors always come from ours
(Chroma's default would download a model at run time).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from ..errors import TutorError
from .documents import Chunk


class ChromaStore:
    def __init__(self, path: Path, url: str | None, subject: str):
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        try:
            if url:
                where = urlparse(url)
                client = chromadb.HttpClient(host=where.hostname or "127.0.0.1", port=where.port or 8000, ssl=where.scheme == "https",
                                             settings=settings)
            else:
                path.mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(path=str(path), settings=settings)
            self.collection = client.get_or_create_collection(f"tutor-{subject}", embedding_function=None,
                                                              metadata={"hnsw:space": "cosine"})
        except Exception as err:  # noqa: BLE001 - Chroma raises many kinds for one unreadable store
            where = url or path
            raise TutorError(f"the knowledge base's vector store at {where} cannot be opened ({type(err).__name__}: "
                             f"{str(err)[:160]}): `kb build --rebuild` makes it again") from None

    def ids(self) -> set[str]:
        found, offset = set(), 0
        while True:
            page = self.collection.get(include=[], limit=5000, offset=offset)["ids"]
            found.update(page)
            if len(page) < 5000:
                return found
            offset += len(page)

    def upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        self.collection.upsert(ids=[c.id for c in chunks], embeddings=vectors, documents=[c.text for c in chunks],
                               metadatas=[{"source": c.source, "topic": c.topic, "kind": c.kind} for c in chunks])

    def delete(self, ids: list[str]) -> None:
        for start in range(0, len(ids), 5000):
            self.collection.delete(ids=ids[start : start + 5000])

    def query(self, vector: list[float], n: int) -> list[str]:
        count = self.collection.count()
        if count == 0:
            return []
        return self.collection.query(query_embeddings=[vector], n_results=min(n, count), include=[])["ids"][0]

    def get(self, ids: list[str]) -> dict[str, tuple[str, dict]]:
        if not ids:
            return {}
        got = self.collection.get(ids=ids, include=["documents", "metadatas"])
        return {i: (d, m or {}) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}

    def count(self) -> int:
        return self.collection.count()
