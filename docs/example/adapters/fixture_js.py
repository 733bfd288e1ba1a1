"""A site adapter in code: the worked example of docs/collecting.md.

The fixture bank's /js/list.html builds its questions with JavaScript from an
array in an inline script. The generic adapter can render that page in
Chromium; this adapter instead reads the array straight out of the HTML,
which needs no browser and is faster and sturdier. Register it from any
plugin; then a site file with `adapter = "fixture-js-data"` uses it.
"""

import json
import re

from tutor import QuestionSource, hookimpl

_DATA = re.compile(r"var data = (\[.*?\]);", re.DOTALL)


def read_js_list(location, session, images_dir, **options):
    """Yield (where, record) for each question in the page's data array."""
    html, collected = session.page(location)  # robots.txt, delay, retries and the page cache, all done
    match = _DATA.search(html)
    if not match:
        yield location, {"__error__": "no data array on the page: has the site changed?"}
        return
    for number, (stem, options, key) in enumerate(json.loads(match.group(1)), start=1):
        where = f"{location}#{number}"
        yield where, {
            "stem": stem,
            "options": {chr(65 + i): option for i, option in enumerate(options)},
            "key": key,
            "__source__": {"name": session.config.name, "url": where, "collected_at": collected.isoformat()},
        }


@hookimpl
def register_sources(register):
    register(QuestionSource(name="fixture-js-data", description="The fixture bank's JavaScript list, read from its data array.",
                            fetch=read_js_list))
