"""`tutor subjects | plugins | types | config`: what is installed and how it is set up."""

from __future__ import annotations

import json

import click

from ..console import table
from ._common import pass_state


@click.command()
def subjects():
    """List the installed subjects."""
    from ..registry import registry

    reg = registry()
    rows = [(s.name, s.title, str(len(reg.types.get(s.name, {}))), s.syllabus) for s in sorted(reg.subjects.values(), key=lambda s: s.name)]
    table(["subject", "title", "types", "syllabus"], rows)


@click.command()
def plugins():
    """Print the installed plugins as JSON: name, distribution, version, hooks."""
    from ..plugins import DISTRIBUTIONS, plugin_manager

    pm = plugin_manager()
    out = []
    for name, plugin in sorted(pm.list_name_plugin()):
        dist, version = DISTRIBUTIONS.get(name, ("?", "?"))
        hooks = sorted(impl.name for impl in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "distribution": dist, "version": version, "hooks": hooks})
    click.echo(json.dumps(out, indent=2))


@click.command()
@pass_state
def types(state):
    """Show the subject's question types."""
    kit = state.kit()
    rows = [(t.id, t.name, t.level, t.format, str(t.marks or "varies"), t.diagrams + (f" ({', '.join(t.diagram_formats)})" if t.diagram_formats else "")) for t in kit.types.values()]
    table(["id", "name", "level", "format", "marks", "diagrams"], rows)


@click.command()
@pass_state
def config(state):
    """Show the workspace and its validated tutor.toml (defaults filled in), as JSON."""
    ws = state.workspace
    settings = ws.config().model_dump(mode="json")
    click.echo(json.dumps({"workspace": str(ws.root.resolve()), "config_file": str(ws.config_path), "exists": ws.config_path.exists(), "config": settings}, indent=2))
