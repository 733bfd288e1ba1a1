"""The core's question sources: exported files. Scrapers register the same way."""

from tutor import hookimpl
from tutor.collect import read_csv, read_jsonl_records
from tutor.models import QuestionSource


@hookimpl
def register_sources(register):
    register(QuestionSource(name="csv", description="A CSV export: one question per row, columns mapped to fields.", fetch=read_csv))
    register(QuestionSource(name="jsonl", description="JSON Lines: one question record per line.", fetch=read_jsonl_records))
