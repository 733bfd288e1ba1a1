"""`tutor subjects | plugins | types | formats | evaluators | rewards | config`: what is installed and how it is set up."""

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
    failed = {f.plugin for f in reg.failures}  # their subjects are listed, but unusable: say so, not "0 types"
    rows = [(s.name, s.title, "plugin failed" if reg.owner["subject", s.name] in failed else str(len(reg.types.get(s.name, {}))),
             s.syllabus) for s in sorted(reg.subjects.values(), key=lambda s: s.name)]
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
    rows = [(t.id, t.name, t.level, t.format, str(t.marks or "varies"),
             t.diagrams + (f" ({', '.join(t.diagram_formats)})" if t.diagram_formats else "")) for t in kit.types.values()]
    table(["id", "name", "level", "format", "marks", "diagrams"], rows)


def _source(kind: str, name: str) -> str:
    """The distribution that registered a thing: 'tutor' for the core's own, else the plugin's."""
    from ..plugins import DISTRIBUTIONS
    from ..registry import registry

    plugin = registry().owner[kind, name]
    return DISTRIBUTIONS.get(plugin, (plugin, "?"))[0]


@click.command()
@click.option("--preamble", "name", metavar="FORMAT", help="Print this format's preamble: what every body of it can use.")
def formats(name):
    """List the diagram formats: what a body must contain, the subjects that draw in them and where they come from."""
    from ..errors import UnknownName
    from ..registry import registry

    reg = registry()
    if name:
        if name not in reg.formats:
            raise UnknownName("diagram format", name, list(reg.formats))
        click.echo(reg.formats[name].preamble.strip())
        return
    rows = []
    for fmt in reg.formats.values():
        body = f"\\begin{{{fmt.environment}}}" if fmt.environment else " or ".join(f"\\{c}" for c in fmt.commands) or "anything"
        users = ", ".join(s.name for s in reg.subjects.values() if fmt.name in s.diagram_formats) or "-"
        rows.append((fmt.name, fmt.title, body, users, _source("diagram format", fmt.name)))
    table(["format", "title", "body needs", "subjects", "from"], rows)


@click.command()
def evaluators():
    """List the evaluators: the question formats each judges, and where it comes from."""
    from ..registry import registry

    rows = [(e.name, ", ".join(e.formats) + (f" ({', '.join(e.subjects)} only)" if e.subjects else ""), _source("evaluator", e.name),
             e.description) for e in registry().evaluators.values()]
    table(["evaluator", "judges", "from", "what it checks"], rows)


@click.command()
@pass_state
def rewards(state):
    """List the GRPO rewards (with --subject, those `train grpo` uses for it): task, weight, subjects, where each comes from."""
    from ..registry import registry

    subject = state.kit().name if state.subject_name else None
    rows = [(r.name, r.task, f"{r.weight:g}", ", ".join(r.subjects) or "all", _source("reward", r.name), r.description)
            for r in registry().rewards.values() if subject is None or not r.subjects or subject in r.subjects]
    table(["reward", "task", "weight", "subjects", "from", "what it scores"], rows)


@click.command()
@pass_state
def config(state):
    """Show the workspace and its validated tutor.toml (defaults filled in), as JSON."""
    ws = state.workspace
    settings = ws.config().model_dump(mode="json")
    out = {"workspace": str(ws.root.resolve()), "config_file": str(ws.config_path), "exists": ws.config_path.exists(), "config": settings}
    click.echo(json.dumps(out, indent=2))
