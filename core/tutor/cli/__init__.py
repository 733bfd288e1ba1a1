"""The `tutor` command line: `tutor --subject S <stage> ...`.

The root group lives here; each stage's commands live in a module of their
own (info, bank, prompts, collect, diagram, teach, models, dataset, train,
evaluate, modes, serve, export, run, plugin), which imports only the shared helpers (_common, ..console)
and, inside its commands, its own stage. Start-up stays light: plugins load
only when a command (or --help) needs them, and heavy libraries (torch,
openai, rich...) are imported inside the commands that use them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from .. import __version__
from ..errors import TutorError, ValidationFailed
from ..workspace import default_root
from . import bank, collect, dataset, diagram, evaluate, export, info, kb, models, modes, plugin, prompts, run, serve, teach, train
from ._common import State


class TutorGroup(click.Group):
    """Adds plugin commands on first look-up and turns TutorErrors into one line."""

    _plugin_commands_added = False

    def _add_plugin_commands(self) -> None:
        if TutorGroup._plugin_commands_added:
            return
        TutorGroup._plugin_commands_added = True
        from ..plugins import call

        # Through pluggy; each plugin's implementation is guarded, so a crash is pinned on its plugin
        # (and warned about), and what that plugin added before it crashed is taken out again.
        self._added_by: dict[str, list[str]] = {}
        for failure in call("register_commands", cli=self):
            for name in self._added_by.get(failure.plugin, []):
                self.commands.pop(name, None)

    def add_command(self, cmd, name=None):
        name = name or cmd.name
        if TutorGroup._plugin_commands_added:  # (the core's commands are added at import, before any plugin loads)
            from ..plugins import PluginWarning, calling

            if (plugin := calling()) is not None:  # a plugin's register_commands is running
                if name in self.commands:
                    message = f"plugin {plugin!r} tried to replace the command {name!r}; kept the original"
                    warnings.warn(message, PluginWarning, stacklevel=2)
                    return
                self._added_by.setdefault(plugin, []).append(name)
        super().add_command(cmd, name)

    def list_commands(self, ctx):
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        self._add_plugin_commands()
        return super().get_command(ctx, name)

    def main(self, *args, **kwargs):
        # Plugin warnings can fire while --help lists commands, before invoke().
        warnings.showwarning = _one_line_warning
        # Deprecation notices between the ML libraries (peft calling a renamed transformers property,
        # say) are for their developers; a teacher running `tutor train` can do nothing about them.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|trl|accelerate|datasets)(\.|$)")
        return super().main(*args, **kwargs)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ValidationFailed as err:
            for problem in err.problems:
                click.echo(str(problem), err=True)
            click.echo(f"error: {len(err.problems)} problem{'s' if len(err.problems) != 1 else ''}", err=True)
            ctx.exit(err.exit_code)
        except TutorError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"warning: {message}", err=True)



@click.group(cls=TutorGroup)
@click.version_option(__version__, prog_name="tutor")
@click.option("--subject", "-s", envvar="TUTOR_SUBJECT", metavar="NAME",
              help="The subject to work on, e.g. physics (see `tutor subjects`).")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=default_root,
              show_default="$TUTOR_WORKSPACE or ./tutor-workspace", help="Where every stage keeps its files.")
@click.pass_context
def cli(ctx, subject, workspace):
    """Turn exam question banks into subject tutor models.

    \b
    Pipeline: collect -> teach -> diagrams -> kb -> dataset -> train -> eval -> export
    (`tutor run` runs it all, re-running only what changed)
    Tutor: answer (ask), explain, set, mark, plan
    Start with `tutor subjects`, then `tutor --subject physics types`.
    """
    ctx.obj = State(subject, workspace)


for command in (info.subjects, info.plugins, info.types, info.formats, info.evaluators, info.rewards, info.config, bank.bank,
                prompts.prompts, collect.collect,
                diagram.diagram, teach.teach, models.models, dataset.dataset, train.train, evaluate.eval_, modes.answer, modes.explain,
                modes.set_, modes.mark, modes.plan, kb.kb, serve.serve, export.export, run.run, plugin.plugin):
    cli.add_command(command)
cli.add_command(modes.answer, "ask")  # the name answer had before the tutor's other modes came


def main() -> None:
    cli(prog_name="tutor")
