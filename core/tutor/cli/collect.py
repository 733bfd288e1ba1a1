"""`tutor collect import | scrape`: bring questions into the subject's bank."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import progress, table
from ._common import pass_state


@click.group()
def collect():
    """Bring questions into the subject's bank: import exports, scrape sites."""


@collect.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", "source_name", help="Question source to read FILE with (default: by extension, csv or jsonl).")
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML file mapping their columns to our fields.")
@click.option("--column", "columns", multiple=True, metavar="FIELD=COLUMN", help="Map one field, e.g. --column stem=Question (repeatable).")
@click.option("--default", "defaults", multiple=True, metavar="FIELD=VALUE",
              help="Value for a field the file lacks, e.g. --default type=alevel-mcq.")
@click.option("--encoding", default="utf-8-sig", show_default=True, help="Text encoding of FILE, e.g. gbk.")
@click.option("--delimiter", help="CSV delimiter (default: sniffed from , ; tab |).")
@click.option("--near", "near_threshold", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Similarity (Jaccard of word pairs) from which questions are reported as near duplicates.")
@pass_state
def collect_import(state, file, source_name, mapping, columns, defaults, encoding, delimiter, near_threshold):
    """Import questions from a CSV or JSON Lines export into the workspace bank.

    Exact duplicates are skipped, near duplicates are reported (near-duplicates.jsonl),
    invalid rows go to rejects.jsonl with the reason and the line. Re-running is safe.
    """
    from ..collect import NEAR_DUPLICATES, REJECTS, Mapping, import_file

    kit = state.kit()
    bank_dir = state.workspace.bank_dir(kit.name)
    with progress(None, f"importing {file.name}") as advance:
        report = import_file(kit, bank_dir, file, Mapping.build(mapping, columns, defaults), source=source_name, encoding=encoding,
                             delimiter=delimiter, near_threshold=near_threshold, progress=advance)
    table(["read", "imported", "duplicate", "near-duplicate", "rejected"],
           [tuple(str(n) for n in (report.read, report.imported, report.duplicate, report.near_duplicate, report.rejected))])
    click.echo(f"bank: {report.bank}")
    if report.near_duplicate:
        pair = report.near_pairs[0]
        click.echo(f"near duplicates: {bank_dir / NEAR_DUPLICATES} (e.g. {pair.new_id} ~ {pair.old_id}, similarity {pair.similarity})")
    if report.rejected:
        again = f" ({report.already_rejected} of the {report.rejected} already recorded there by an earlier run)"
        again = again if report.already_rejected else ""
        click.echo(f"rejected rows, with reasons: {bank_dir / REJECTS}{again}")


@collect.command("scrape")
@click.argument("site", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--delay", type=click.FloatRange(0), help="Seconds between requests to one host (default: the site file's, else 1).")
@pass_state
def collect_scrape(state, site, delay):
    """Scrape a question-bank site described by a TOML file into the workspace bank.

    Pages are cached as they are fetched: after a crash or Ctrl-C, run the same
    command again and only the rest is fetched. Credentials come from the
    environment variables the site file names.
    """
    from ..collect import REJECTS, scrape_site

    kit = state.kit()
    bank_dir = state.workspace.bank_dir(kit.name)
    with progress(None, f"scraping {site.stem}") as advance:
        report = scrape_site(kit, bank_dir, lambda name: state.workspace.scrape_dir(kit.name, name), site, delay=delay, progress=advance)
    counts = (report.read, report.imported, report.duplicate, report.near_duplicate, report.rejected, report.requests, report.from_cache)
    table(["read", "imported", "duplicate", "near-duplicate", "rejected", "requests", "cached pages"], [tuple(map(str, counts))])
    click.echo(f"bank: {report.bank}")
    if report.rejected:
        click.echo(f"rejected questions, with reasons: {bank_dir / REJECTS}")
