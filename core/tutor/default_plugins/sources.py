"""The core's question sources: exported files, and the generic site scraper."""

from tutor import hookimpl
from tutor.collect import read_csv, read_jsonl_records
from tutor.models import QuestionSource


def scrape_site(location, **options):
    from tutor.scrape import scrape_site  # selenium and bs4 only when a site is scraped

    return scrape_site(location, **options)


@hookimpl
def register_sources(register):
    register(QuestionSource(name="csv", description="A CSV export: one question per row, columns mapped to fields.", fetch=read_csv))
    register(QuestionSource(name="jsonl", description="JSON Lines: one question record per line.", fetch=read_jsonl_records))
    register(QuestionSource(name="site", description="A question-bank website, read with the CSS selectors of a site file.", fetch=scrape_site))
