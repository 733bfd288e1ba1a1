"""`tutor prompts render`: the exact prompt a model gets."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import bundled_bank, pass_state


@click.group()
def prompts():
    """Render prompt templates."""


@prompts.command("render")
@click.argument("kind")
@click.option("--question", "question_id", metavar="ID", help="Question id or unique prefix (default: the bank's first question).")
@click.option("--bank", "bank_path", type=click.Path(path_type=Path),
              help="Bank to take the question from (default: the bundled sample bank).")
@click.option("--student-answer", help="For `mark`: the answer to mark (default: the question's gold answer).")
@click.option("--description", help="For `diagram`: what to draw (default: the first DIAGRAM marker in the question's gold answer).")
@click.option("--format", "format_name", help="For `diagram`: the diagram format (default: chosen from the description).")
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
@pass_state
def prompts_render(state, kind, question_id, bank_path, student_answer, description, format_name, as_json):
    """Print the exact prompt of KIND (answer, explain, set, mark, diagram) for a question."""
    from ..bank import load_bank
    from ..prompts import question_context, render

    kit = state.kit()
    loaded = load_bank(kit, bank_path or bundled_bank(kit))
    question = loaded.question(question_id) if question_id else loaded.questions[0]
    gold = next(iter(loaded.answers_to(question.id)), None)
    context = question_context(kit, question, gold)
    if kind == "mark":
        context["student_answer"] = student_answer or (gold.text if gold else "")
    if kind == "set":
        context["topic"] = question.topic
        context["examples"] = [q for q in loaded.questions if q.type == question.type]
    if kind == "diagram":
        markers = gold.diagrams if gold else []
        context["description"] = description or (markers[0].description if markers else question.stem)
        context["format"] = kit.format(format_name) if format_name else kit.format_for(context["description"], context["type"])
    messages = render(kit, kind, state.workspace.template_dirs(kit.name), **context)
    if as_json:
        click.echo(json.dumps(messages, indent=2, ensure_ascii=False))
    else:
        click.echo("\n\n".join(f"=== {m['role']} ===\n{m['content']}" for m in messages))
