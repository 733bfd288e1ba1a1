"""`tutor geography-topics`: which topics the bank covers, and where it is thin.

A plugin command is an ordinary click command; the core adds it to the `tutor`
group. Its name starts with the subject's, because every installed plugin's
commands share one namespace.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click


@click.command("geography-topics")
@click.option("--bank", "bank_path", type=click.Path(path_type=Path),
              help="Bank folder or questions file (default: the bundled sample bank).")
def geography_topics(bank_path):
    """List the geography topics with the number of bank questions on each."""
    from tutor import get_subject
    from tutor.bank import load_bank

    kit = get_subject("geography")
    bank = load_bank(kit, bank_path or kit.subject.bank)  # a TutorError here becomes one line from the CLI
    per_topic = Counter(q.topic for q in bank.questions)
    per_type = {topic: Counter(q.type for q in bank.questions if q.topic == topic) for topic in per_topic}
    width = max(len(t) for t in kit.subject.topics)
    click.echo(f"{'topic':<{width}}  questions  types")
    for topic in kit.subject.topics:  # syllabus order, so a topic with no questions still shows up
        types = ", ".join(f"{t} x{n}" for t, n in sorted(per_type.get(topic, {}).items()))
        click.echo(f"{topic:<{width}}  {per_topic[topic]:>9}  {types}".rstrip())
    total = len(bank.questions)
    click.echo(f"{total} question{'s' if total != 1 else ''} in {len(per_topic)} of {len(kit.subject.topics)} topics")
