"""`tutor ask`: the base model plus the subject's newest adapter, on a question or a description."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import say
from ..runs import ROLES
from ._common import pass_state


@click.command()
@click.argument("text", required=False)
@click.option("--id", "question_id", metavar="QUESTION", help="Ask a bank question by id (with its type and marks, as trained).")
@click.option("--role", type=click.Choice(ROLES), default="answer", show_default=True,
              help="diagram: TEXT is a description; the code is compiled.")
@click.option("--format", "format_name", metavar="FORMAT", help="Diagram format for the diagram role (default: the subject's first).")
@click.option("--base", "base_only", is_flag=True, help="Answer with the base model alone, no adapter.")
@click.option("--compare", is_flag=True, help="Answer with the base model and with the adapter, one after the other.")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False, path_type=Path), help="This adapter instead of the newest.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=384, show_default=True)
@pass_state
def ask(state, text, question_id, role, format_name, base_only, compare, adapter, max_new_tokens):
    """Answer TEXT (or bank question --id) with the base model plus the subject's newest adapter."""
    from ..ask import draw, generate, load_for_inference, prompt_for

    kit = state.kit()
    if bool(text) == bool(question_id):
        raise click.UsageError("give the question as TEXT or as --id QUESTION, one of them")
    if base_only and (compare or adapter):
        raise click.UsageError("--base answers without an adapter: it goes with neither --compare nor --adapter")
    messages, fmt, shown = prompt_for(kit, state.workspace, role, text=text, question_id=question_id, format_name=format_name)
    model, tokenizer, used = load_for_inference(state.workspace, kit.name, role, adapter=adapter, base_only=base_only,
                                                base=state.workspace.config().model.base, say=say)
    if shown:
        click.echo(f"{shown}\n")

    def answer(label: str | None) -> None:
        if label:
            click.echo(f"--- {label} ---")
        reply = generate(model, tokenizer, messages, max_new_tokens=max_new_tokens, stream=lambda piece: click.echo(piece, nl=False))
        click.echo()
        if reply.cut:
            click.echo(f"[stopped at {max_new_tokens} new tokens: --max-new-tokens allows more]")
        if fmt is not None:
            click.echo(draw(state.workspace, fmt, reply.text))

    if compare:
        with model.disable_adapter():  # the same weights without the adapter: the base model, loaded once
            answer("base model")
        click.echo()
    answer(f"tuned: {used}" if compare else None)
    if used and not compare:
        say(f"adapter: {used}")
