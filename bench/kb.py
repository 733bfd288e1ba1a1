"""The knowledge base: indexing throughput, and query latency as the index grows (1k, 10k, 100k chunks).

    python bench/kb.py [--sizes 1000,10000,100000] [--queries 50]

Recall@5: for each subject, the knowledge base of its notes and its bank's
train split answers each held-out (test and validation) question: is a chunk
of the question's own topic among the first 5 (and first 1, and the mean
reciprocal rank, which separate the modes where recall@5 is at its ceiling)? Hybrid (RRF) against
embeddings alone and BM25 alone, on the same questions. Then the same for
bench/data/kb-queries.jsonl: questions as a student might type them (no
syllabus wording), each with the topic it belongs to, where keyword overlap
helps BM25 least.
Indexing: `kb build` of the physics notes and bank (real chunks, real
embeddings), in chunks per second, against the embedding model alone on the
same texts (the baseline: what indexing costs beyond embedding).
Latency: synthetic chunks (sentences drawn from a physics vocabulary) fill a
Chroma store and a BM25 index to each size; their vectors are random unit
vectors, since embedding 100k chunks on 2 cores would take most of an hour
and the store's search cost does not depend on where a vector came from.
Each query (a bank question) is embedded and answered by both indexes and
fused, as `kb search` does: p50 and p95 over --queries queries. Growth per
query is printed against the growth in size: sub-linear means the ratio of
latencies stays well below the ratio of sizes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("force mass acceleration momentum energy power current voltage resistance charge field wave frequency amplitude "
         "wavelength photon electron nucleus decay half-life temperature pressure volume gas thermal capacity moment pivot "
         "equilibrium velocity displacement gradient area graph circuit series parallel lens refraction diffraction").split()


def synthetic(n: int, seed: int = 0):
    from tutor.kb.documents import Chunk

    rng = random.Random(seed)
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120)))
        yield Chunk(f"{text} ({i})", f"doc: synthetic-{i // 100}.md", rng.choice(["mechanics", "waves", "electricity"]), "doc")


def recall(kit) -> None:
    """Two rows for the subject: its held-out bank questions, and the students' own wording (bench/data/kb-queries.jsonl)."""
    from tutor import dataset as ds
    from tutor.answers import question_text
    from tutor.kb import KnowledgeBase
    from tutor.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace(Path(tmp))
        base = KnowledgeBase(workspace, kit.name, lambda _: None)
        base.build(kit)
        bank = ds.choose_bank(kit, workspace)[0]
        split = ds.plan_split(ds.bank_units(bank), workspace.config().train).split
        held = [(question_text(q), q.topic) for q in bank.questions if split.get(q.id) in ("test", "validation")]
        own = [(row["query"], row["topic"]) for row in map(json.loads, QUERIES.read_text(encoding="utf-8").splitlines())
               if row["subject"] == kit.name]
        unknown = {topic for _, topic in own} - set(kit.subject.topics)
        if unknown:
            raise SystemExit(f"{QUERIES}: {kit.name} has no topic {', '.join(sorted(unknown))}")
        for name, queries in (("held-out", held), ("own words", own)):
            ranks = {mode: [_first_rank(base.search(text, 10, mode), topic) for text, topic in queries] for mode in MODES}
            cells = []
            for mode in MODES:
                at1 = sum(r == 1 for r in ranks[mode]) / len(queries)
                at5 = sum(r <= 5 for r in ranks[mode]) / len(queries)
                mrr = sum(1 / r for r in ranks[mode]) / len(queries)
                cells.append(f"{at5:>5.2f} {at1:>5.2f} {mrr:>5.2f}")
            print(f"{kit.name:10} {name:9} {len(queries):>3}   " + "   ".join(cells))


QUERIES = Path(__file__).with_name("data") / "kb-queries.jsonl"  # a student's own wording, with the topic it belongs to


MODES = ("hybrid", "dense", "bm25")


def _first_rank(hits, topic: str) -> float:
    """The rank (1-based) of the first chunk of `topic`; infinity when none of the 10 is."""
    return next((i for i, hit in enumerate(hits, 1) if hit.topic == topic), float("inf"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    import numpy as np
    from tutor.answers import question_text
    from tutor.bank import load_bank
    from tutor.kb import KEYWORDS, KnowledgeBase, _save_bm25
    from tutor.kb.embed import DIMENSIONS, MODEL_ID, Embedder
    from tutor.kb.store import ChromaStore
    from tutor.registry import get_subject
    from tutor.workspace import Workspace

    print("recall@k: a chunk of the question's own topic among the first k; MRR: 1/rank of the first such chunk (of 10)")
    print(f"{'':10} {'':9} {'':>3}   " + "   ".join(f"{m:^17}" for m in MODES))
    print(f"{'subject':10} {'queries':9} {'n':>3}   " + "   ".join(f"{'R@5':>5} {'R@1':>5} {'MRR':>5}" for _ in MODES))
    for subject in ("physics", "economics", "chemistry"):
        recall(get_subject(subject))
    print()
    kit = get_subject("physics")
    queries = [question_text(q) for q in load_bank(kit, kit.subject.bank).questions][: args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        base = KnowledgeBase(Workspace(Path(tmp) / "ws"), "physics", lambda _: None)
        texts = [c.text for c in base.chunks(kit, [])]
        embedder = Embedder(lambda _: None)
        embedder(texts[:8])  # warm
        started = time.perf_counter()
        embedder(texts)
        embed_seconds = time.perf_counter() - started
        base._embedder = embedder  # the same loaded model: the ratio is what indexing costs beyond embedding, not a model load
        started = time.perf_counter()
        built = base.build(kit)
        build_seconds = time.perf_counter() - started
        print(f"indexing {built.chunks} real chunks: {built.chunks / build_seconds:.1f} chunks/s "
              f"(embedding alone {len(texts) / embed_seconds:.1f} chunks/s; kb build / embedding = {build_seconds / embed_seconds:.2f}x)")

        print(f"\n{'chunks':>8} {'fill s':>8} {'p50 ms':>8} {'p95 ms':>8} {'x size':>7} {'x p50':>7}")
        first = None
        for size in [int(s) for s in args.sizes.split(",")]:
            folder = Path(tmp) / f"size-{size}"
            sized = KnowledgeBase(Workspace(folder), "physics", lambda _: None)
            sized._embedder = embedder
            sized.folder.mkdir(parents=True)
            store = ChromaStore(sized.folder / "chroma", None, "physics")
            chunks = list(synthetic(size))
            rng = np.random.default_rng(0)
            started = time.perf_counter()
            for start in range(0, size, 5000):
                part = chunks[start : start + 5000]
                vectors = rng.standard_normal((len(part), DIMENSIONS)).astype("float32")
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                store.upsert(part, vectors.tolist())
            _save_bm25(sized.folder / "bm25", chunks)
            (sized.folder / "manifest.json").write_text(json.dumps({"embedding": MODEL_ID, "keywords": KEYWORDS, "chunks": size}))
            fill = time.perf_counter() - started
            sized._opened = store
            times = []
            for query in queries:
                started = time.perf_counter()
                sized.search(query, k=5)
                times.append((time.perf_counter() - started) * 1000)
            p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
            first = first or (size, p50)
            print(f"{size:>8} {fill:>8.1f} {p50:>8.1f} {p95:>8.1f} {size / first[0]:>7.0f} {p50 / first[1]:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
