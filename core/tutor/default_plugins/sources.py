"""The simplest question source: a JSON Lines file of question records."""

import json
from pathlib import Path

from tutor import hookimpl
from tutor.models import QuestionSource


def read_records(location: str):
    with open(Path(location), encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


@hookimpl
def register_sources(register):
    register(QuestionSource(name="jsonl", description="Question records, one JSON object per line.", fetch=read_records))
