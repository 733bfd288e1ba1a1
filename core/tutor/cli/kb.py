"""`tutor kb add | build | stats | search`: the subject's knowledge base."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import progress, say, table
from ._common import pass_state


@click.group()
def kb():
    """The subject's knowledge base: its notes, its bank's worked examples (train split) and your documents.

    \b
    Retrieval fuses embeddings (all-MiniLM-L6-v2, offline) and BM25 keywords; `answer`,
    `explain` and `mark` use it with --rag (on by default once it is built).
    """


@kb.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@pass_state
def kb_add(state, paths):
    """Copy documents (Markdown, text, HTML, PDF; files or folders) into the knowledge base, then index them."""
    from ..kb import KnowledgeBase

    kit = state.kit()
    base = KnowledgeBase(state.workspace, kit.name, say)
    added, skipped = base.add(list(paths))
    for line in skipped:
        click.echo(f"skipped: {line}", err=True)
    click.echo(f"added {len(added)} document{'s' if len(added) != 1 else ''} to {base.docs}")
    _build(base, kit, rebuild=False)


@kb.command("build")
@click.option("--rebuild", is_flag=True, help="Start the index again (after a change of embedding model, or a damaged index).")
@pass_state
def kb_build(state, rebuild):
    """Index what changed since the last build: new chunks are embedded, vanished ones removed."""
    from ..kb import KnowledgeBase

    kit = state.kit()
    _build(KnowledgeBase(state.workspace, kit.name, say), kit, rebuild)


def _build(base, kit, rebuild: bool) -> None:
    with progress(None, f"indexing {kit.name}") as advance:
        built = base.build(kit, rebuild=rebuild, progress=advance)
    for line in built.problems:
        click.echo(f"skipped: {line}", err=True)
    for line in built.warnings:
        click.echo(f"warning: {line}", err=True)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(built.per_kind.items()))
    click.echo(f"{built.chunks} chunks ({kinds}): {built.added} embedded, {built.removed} removed, "
               f"{len(built.problems)} documents skipped, in {built.seconds} s -> {base.folder}")


@kb.command("stats")
@pass_state
def kb_stats(state):
    """What the knowledge base holds, and what it was built with."""
    from ..kb import KnowledgeBase

    kit = state.kit()
    stats = KnowledgeBase(state.workspace, kit.name, say).stats()
    rows = [("chunks", str(stats["chunks"])), *((f"  {k}", str(n)) for k, n in sorted(stats.get("per_kind", {}).items())),
            ("in the vector store", str(stats["stored"])), ("your documents", str(stats["documents"])),
            ("embedding model", stats["embedding"]), ("store", stats["store"]), ("built", stats["built"])]
    table(["", "value"], rows)


@kb.command("search")
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 50), default=5, show_default=True, help="How many chunks.")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "bm25"]), default="hybrid", show_default=True,
              help="Both indexes fused (RRF), or one alone.")
@pass_state
def kb_search(state, query, k, mode):
    """The chunks that best match QUERY, with their scores and sources."""
    from ..kb import KnowledgeBase

    kit = state.kit()
    hits = KnowledgeBase(state.workspace, kit.name, say).search(query, k, mode)
    if not hits:
        click.echo("nothing found")
    for number, hit in enumerate(hits, 1):
        ranks = ", ".join(f"{name} #{rank}" if rank else f"{name} -" for name, rank in hit.ranks.items())
        click.echo(f"[{number}] {hit.source}  (topic {hit.topic or '-'}; score {hit.score:.4f}; {ranks})")
        click.echo("    " + hit.text.replace("\n", "\n    ") + "\n")
