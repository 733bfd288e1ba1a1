"""`tutor plugin new`: scaffold a subject plugin."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def plugin():
    """Create subject plugins."""


@plugin.command("new")
@click.argument("name")
@click.option("--path", "parent", type=click.Path(file_okay=False, path_type=Path), default=Path("."), help="Where to create tutor-NAME/.")
def plugin_new(name, parent):
    """Scaffold a subject plugin package tutor-NAME, ready to `pip install -e`."""
    from ..scaffold import scaffold

    target = scaffold(name, parent)
    click.echo(f"created {target}\nnext: pip install -e {target} && tutor --subject {name} types")
