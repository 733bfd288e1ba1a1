"""`tutor export`: the subject's adapter as peft, merged weights, GGUF and an Ollama Modelfile, contract-checked."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import say
from ._common import pass_state


@click.command("export")
@click.option("--to", "to", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: <workspace>/exports/<subject>).")
@click.option("--format", "formats", default="peft,merged,gguf,ollama", show_default=True,
              help="Comma-separated: peft, merged, gguf, ollama (ollama implies gguf).")
@click.option("--adapter", default="latest", show_default=True, help="'latest' or a finished adapter run folder.")
@click.option("--quant", "quants", default="f16,q8_0", show_default=True, help="GGUF types, comma-separated: f16, q8_0, bf16, f32.")
@click.option("--overwrite", is_flag=True, help="Replace an export already in --to.")
@click.option("--force", is_flag=True, help="Export even when the adapter's latest eval fails the gate (worse than its base).")
@click.option("--push", "repo", metavar="OWNER/NAME", help="Then upload the export to this Hugging Face hub repository (HF_TOKEN).")
@click.option("--public", is_flag=True, help="With --push: a public repository (default: private).")
@pass_state
def export(state, to, formats, adapter, quants, overwrite, force, repo, public):
    """Export the answer adapter for use elsewhere: peft (vLLM --lora-modules), merged (plain transformers),
    gguf (llama.cpp), ollama (a Modelfile). Every export runs the contract check (templates and stop tokens agree
    across formats; greedy round trip) and is refused if it fails."""
    from ..export import export as run_export
    from ..export import hub_token, parse_formats, push

    kit = state.kit()
    chosen = parse_formats(formats)
    token = hub_token(repo) if repo else None  # before minutes of work: a push that cannot happen fails now
    target = to or state.workspace.exports_dir(kit.name)
    types = [q.strip() for q in quants.split(",") if q.strip()]
    done = run_export(state.workspace, kit.name, target, chosen, adapter=adapter, quants=types, overwrite=overwrite, force=force, say=say)
    for name, paths in done.files.items():
        size = sum(p.stat().st_size for p in paths if p.is_file()) / 1e6
        click.echo(f"{name:7} {size:8.1f} MB  {done.seconds.get(name, 0):6.1f} s  {', '.join(p.name for p in paths[:4])}"
                   f"{' ...' if len(paths) > 4 else ''}")
    for name, figures in done.contract.get("round_trip", {}).items():
        if isinstance(figures, dict):
            click.echo(f"round trip {name}: leading greedy tokens matching {figures['matching_leading_tokens']}, "
                       f"top-1 agreement {figures['top1_agreement']:.3f}")
    templates = done.contract.get("templates", {})
    click.echo(f"contract: {templates.get('conversations')} golden conversations render alike through "
               f"{', '.join(templates.get('formats_checked', []))}; EOS {templates.get('trained_eos')!r} stops every format")
    click.echo(f"exported to {done.folder}")
    if done.ollama_command:
        click.echo(f"next: {done.ollama_command}")
    if repo:
        click.echo(f"pushed: {push(done.folder, repo, token, private=not public, say=say)}")
