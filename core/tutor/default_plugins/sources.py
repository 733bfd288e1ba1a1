"""The core's question sources: exported files, and the generic site scraper.

Each imports its module on first use, and the models are built inside the
hook: listing plugins (as `tutor --help` does) must not pay for numpy,
BeautifulSoup, Selenium or the models.
"""

from tutor.hookspecs import hookimpl


def read_csv(location, **options):
    from tutor.collect import read_csv

    return read_csv(location, **options)


def read_jsonl(location, **options):
    from tutor.collect import read_jsonl_records

    return read_jsonl_records(location, **options)


def scrape_site(location, **options):
    from tutor.scrape import scrape_site

    return scrape_site(location, **options)


@hookimpl
def register_sources(register):
    from tutor.models import QuestionSource

    register(QuestionSource(name="csv", description="A CSV export: one question per row, columns mapped to fields.", fetch=read_csv))
    register(QuestionSource(name="jsonl", description="JSON Lines: one question record per line.", fetch=read_jsonl))
    register(QuestionSource(name="site", description="A question-bank website, read with the CSS selectors of a site file.",
                            fetch=scrape_site))
