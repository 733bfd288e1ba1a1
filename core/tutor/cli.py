"""The `tutor` command line: `tutor --subject S <stage> ...`.

Start-up stays light: plugins load only when a command (or --help) needs
them, and heavy libraries are imported inside the commands that use them.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from . import __version__
from .errors import TutorError, UnknownName, ValidationFailed
from .workspace import Workspace, default_root


class TutorGroup(click.Group):
    """Adds plugin commands on first look-up and turns TutorErrors into one line."""

    _plugin_commands_added = False

    def _add_plugin_commands(self) -> None:
        if TutorGroup._plugin_commands_added:
            return
        TutorGroup._plugin_commands_added = True
        from .plugins import PluginWarning, plugin_manager

        # One plugin at a time, so a clash or a crash can be pinned on its plugin.
        for impl in plugin_manager().hook.register_commands.get_hookimpls():
            before = dict(self.commands)
            try:
                impl.function(cli=self)
            except Exception as err:  # noqa: BLE001 - any failure in someone else's code
                self.commands = before
                warnings.warn(f"plugin {impl.plugin_name!r} failed in register_commands and was skipped there: {type(err).__name__}: {err}", PluginWarning, stacklevel=2)
                continue
            for name, command in before.items():
                if self.commands[name] is not command:
                    self.commands[name] = command
                    warnings.warn(f"plugin {impl.plugin_name!r} tried to replace the command {name!r}; kept the original", PluginWarning, stacklevel=2)

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


class State:
    def __init__(self, subject: str | None, workspace: Path):
        self.subject_name, self.workspace = subject, Workspace(workspace)

    def kit(self):
        from .registry import get_subject, registry

        if not self.subject_name:
            raise UnknownName("subject", "(none given: use --subject)", list(registry().subjects))
        return get_subject(self.subject_name)


pass_state = click.make_pass_decorator(State)


@click.group(cls=TutorGroup)
@click.version_option(__version__, prog_name="tutor")
@click.option("--subject", "-s", envvar="TUTOR_SUBJECT", metavar="NAME", help="The subject to work on, e.g. physics (see `tutor subjects`).")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=default_root, show_default="$TUTOR_WORKSPACE or ./tutor-workspace", help="Where every stage keeps its files.")
@click.pass_context
def cli(ctx, subject, workspace):
    """Turn exam question banks into subject tutor models.

    \b
    Pipeline: collect -> teach -> diagrams -> dataset -> train -> eval -> ask
    Start with `tutor subjects`, then `tutor --subject physics types`.
    """
    ctx.obj = State(subject, workspace)


@cli.command()
def subjects():
    """List the installed subjects."""
    from .registry import registry

    reg = registry()
    rows = [(s.name, s.title, str(len(reg.types.get(s.name, {}))), s.syllabus) for s in sorted(reg.subjects.values(), key=lambda s: s.name)]
    _table(["subject", "title", "types", "syllabus"], rows)


@cli.command()
def plugins():
    """Print the installed plugins as JSON: name, distribution, version, hooks."""
    from .plugins import DISTRIBUTIONS, plugin_manager

    pm = plugin_manager()
    out = []
    for name, plugin in sorted(pm.list_name_plugin()):
        dist, version = DISTRIBUTIONS.get(name, ("?", "?"))
        hooks = sorted(impl.name for impl in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "distribution": dist, "version": version, "hooks": hooks})
    click.echo(json.dumps(out, indent=2))


@cli.command()
@pass_state
def types(state):
    """Show the subject's question types."""
    kit = state.kit()
    rows = [(t.id, t.name, t.level, t.format, str(t.marks or "varies"), t.diagrams + (f" ({', '.join(t.diagram_formats)})" if t.diagram_formats else "")) for t in kit.types.values()]
    _table(["id", "name", "level", "format", "marks", "diagrams"], rows)


@cli.command()
@pass_state
def config(state):
    """Show the workspace and its validated tutor.toml (defaults filled in), as JSON."""
    ws = state.workspace
    settings = ws.config().model_dump(mode="json")
    click.echo(json.dumps({"workspace": str(ws.root.resolve()), "config_file": str(ws.config_path), "exists": ws.config_path.exists(), "config": settings}, indent=2))


@cli.group()
def bank():
    """Check and inspect question banks."""


@bank.command("validate")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@pass_state
def bank_validate(state, path):
    """Check a bank folder or questions file (default: the subject's bundled sample bank).

    Reports every problem as file:line: field: message, and exits 1 if there is any.
    """
    from .bank import load_bank

    kit = state.kit()
    target = path or _default_bank(state, kit)
    # The sample bank ships with its gold answers; a workspace bank gets them later, from teach.
    loaded = load_bank(kit, target, require_answers=path is None and target == kit.subject.bank)
    click.echo(f"{kit.name}: {target}: ok: {len(loaded.questions)} questions, {len(loaded.answers)} gold answers, {len(loaded.diagrams)} diagrams")


@bank.command("stats")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@pass_state
def bank_stats(state, path, as_json):
    """Counts per type, topic and level, the MCQ key balance and the share of answers with diagrams."""
    from dataclasses import asdict

    from .bank import bank_stats, load_bank

    kit = state.kit()
    stats = bank_stats(kit, load_bank(kit, path or _default_bank(state, kit)))
    if as_json:
        click.echo(json.dumps({**asdict(stats), "diagram_share": round(stats.diagram_share, 3)}, indent=2))
        return
    click.echo(f"{kit.name}: {stats.questions} questions, {stats.gold_answers} gold answers, {stats.diagrams} diagrams\n")
    _table(["type", "level", "questions", "answers with diagrams"], [
        (t, kit.types[t].level if t in kit.types else "?", str(n), "{}/{}".format(*stats.with_diagram.get(t, (0, 0))))
        for t, n in stats.per_type.items()
    ])
    click.echo()
    _table(["topic", "questions"], [(t, str(n)) for t, n in stats.per_topic.items()])
    click.echo()
    _table(["level", "questions"], [(lv, str(n)) for lv, n in sorted(stats.per_level.items())])
    click.echo()
    _table(["MCQ key", "questions"], [(k, str(n)) for k, n in stats.mcq_keys.items()])
    click.echo()
    _table(["diagram format", "diagrams"], [(f, str(n)) for f, n in sorted(stats.diagram_formats.items())])
    click.echo(f"\ngold answers with a (DIAGRAM: ...) marker: {stats.diagram_share:.0%}")


@bank.command("list")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--type", "type_id", help="Only questions of this type.")
@pass_state
def bank_list(state, path, type_id):
    """List a bank's questions: id, type, topic, marks and the start of the stem."""
    from .bank import load_bank

    kit = state.kit()
    if type_id:
        kit.type(type_id)  # an unknown type is an error, not an empty list
    loaded = load_bank(kit, path or _default_bank(state, kit))
    rows = [(q.id, q.type, q.topic, str(q.marks), " ".join(q.stem.split())[:60]) for q in loaded.questions if type_id in (None, q.type)]
    _table(["id", "type", "topic", "marks", "stem"], rows)


@cli.group()
def prompts():
    """Render prompt templates."""


@prompts.command("render")
@click.argument("kind")
@click.option("--question", "question_id", metavar="ID", help="Question id or unique prefix (default: the bank's first question).")
@click.option("--bank", "bank_path", type=click.Path(path_type=Path), help="Bank to take the question from (default: the bundled sample bank).")
@click.option("--student-answer", help="For `mark`: the answer to mark (default: the question's gold answer).")
@click.option("--description", help="For `diagram`: what to draw (default: the first DIAGRAM marker in the question's gold answer).")
@click.option("--format", "format_name", help="For `diagram`: the diagram format (default: chosen from the description).")
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
@pass_state
def prompts_render(state, kind, question_id, bank_path, student_answer, description, format_name, as_json):
    """Print the exact prompt of KIND (answer, explain, set, mark, diagram) for a question."""
    from .bank import load_bank
    from .prompts import question_context, render

    kit = state.kit()
    loaded = load_bank(kit, bank_path or _bundled_bank(kit))
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


@cli.group()
def collect():
    """Bring questions into the subject's bank: import exports, scrape sites."""


@collect.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", "source_name", help="Question source to read FILE with (default: by extension, csv or jsonl).")
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TOML file mapping their columns to our fields.")
@click.option("--column", "columns", multiple=True, metavar="FIELD=COLUMN", help="Map one field, e.g. --column stem=Question (repeatable).")
@click.option("--default", "defaults", multiple=True, metavar="FIELD=VALUE", help="Value for a field the file lacks, e.g. --default type=alevel-mcq.")
@click.option("--encoding", default="utf-8-sig", show_default=True, help="Text encoding of FILE, e.g. gbk.")
@click.option("--delimiter", help="CSV delimiter (default: sniffed from , ; tab |).")
@click.option("--near", "near_threshold", type=click.FloatRange(0, 1), default=0.8, show_default=True, help="Similarity (Jaccard of word pairs) from which questions are reported as near duplicates.")
@pass_state
def collect_import(state, file, source_name, mapping, columns, defaults, encoding, delimiter, near_threshold):
    """Import questions from a CSV or JSON Lines export into the workspace bank.

    Exact duplicates are skipped, near duplicates are reported (near-duplicates.jsonl),
    invalid rows go to rejects.jsonl with the reason and the line. Re-running is safe.
    """
    from .collect import Mapping, import_questions
    from .registry import registry

    kit = state.kit()
    sources = registry().sources
    name = source_name or ("jsonl" if file.suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv")
    if name not in sources:
        raise UnknownName("question source", name, list(sources))
    options = {"encoding": encoding} | ({"delimiter": delimiter} if delimiter else {})
    records = sources[name].fetch(str(file), **options)
    bank_dir = state.workspace.bank_dir(kit.name)
    with _progress(None, f"importing {file.name}") as advance:
        report = import_questions(kit, records, bank_dir, Mapping.build(mapping, columns, defaults), near_threshold, advance)
    if report.read == 0:
        raise TutorError(f"{file}: no records found")
    _table(["read", "imported", "duplicate", "near-duplicate", "rejected"],
           [tuple(str(n) for n in (report.read, report.imported, report.duplicate, report.near_duplicate, report.rejected))])
    click.echo(f"bank: {report.bank}")
    if report.near_duplicate:
        click.echo(f"near duplicates: {bank_dir / 'near-duplicates.jsonl'} (e.g. {report.near_pairs[0].new_id} ~ {report.near_pairs[0].old_id}, similarity {report.near_pairs[0].similarity})")
    if report.rejected:
        again = f" ({report.already_rejected} of the {report.rejected} already recorded there by an earlier run)"
        again = again if report.already_rejected else ""
        click.echo(f"rejected rows, with reasons: {bank_dir / 'rejects.jsonl'}{again}")


@collect.command("scrape")
@click.argument("site", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--delay", type=click.FloatRange(0), help="Seconds between requests to one host (default: the site file's, else 1).")
@pass_state
def collect_scrape(state, site, delay):
    """Scrape a question-bank site described by a TOML file into the workspace bank.

    Pages are cached as they are fetched: after a crash or Ctrl-C, run the same
    command again and only the rest is fetched. Credentials come from the
    environment variables the site file names.
    """
    from .collect import Importer, Mapping
    from .registry import registry
    from .scrape import Session, SiteConfig

    kit = state.kit()
    config = SiteConfig.load(site)
    sources = registry().sources
    if config.adapter not in sources:
        raise UnknownName("question source", config.adapter, list(sources))
    if delay is not None:
        config = config.model_copy(update={"delay": delay})
    bank_dir = state.workspace.bank_dir(kit.name)
    session = Session(config, state.workspace.subject_dir(kit.name) / "scrape" / config.name)
    mapping = Mapping.build(defaults=[f"{k}={v}" for k, v in config.defaults.items()])
    try:
        with Importer(kit, bank_dir, mapping) as importer, _progress(None, f"scraping {config.name}") as advance:
            for where, record in sources[config.adapter].fetch(config.start, session=session, images_dir=bank_dir / "images"):
                importer.add(where, record)
                advance()
    except KeyboardInterrupt:
        raise TutorError(f"interrupted after {session.requests} requests; everything collected is saved: run the same command to resume") from None
    finally:
        session.close()
    report = importer.report
    _table(["read", "imported", "duplicate", "near-duplicate", "rejected", "requests", "cached pages"],
           [tuple(str(n) for n in (report.read, report.imported, report.duplicate, report.near_duplicate, report.rejected, session.requests, session.from_cache))])
    click.echo(f"bank: {report.bank}")
    if report.rejected:
        click.echo(f"rejected questions, with reasons: {bank_dir / 'rejects.jsonl'}")


@cli.group()
def diagram():
    """Render diagram code to pictures, check a bank's diagrams, extract DIAGRAM markers."""


def _renderer(state, timeout: float | None = None):
    from .diagrams import renderer_for

    return renderer_for(state.workspace, timeout)


_timeout_option = click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                               help="Seconds one pdflatex run may take (default: timeout under [diagrams] in tutor.toml, else 30).")


@diagram.command("render")
@click.argument("source", metavar="FILE|-")
@click.option("--format", "format_name", help="Diagram format (default: the subject's first).")
@click.option("--standalone", is_flag=True, help="SOURCE is a whole LaTeX document, not a body the format wraps.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Where to write the pictures (default: <workspace>/<subject>/diagrams).")
@_timeout_option
@pass_state
def diagram_render(state, source, format_name, standalone, out, timeout):
    """Compile diagram code in the sandbox; print the paths of the PNG, SVG and PDF."""
    import shutil

    from .diagrams import require_format

    kit = state.kit()
    fmt = kit.format(format_name or (kit.subject.diagram_formats or ["tikz"])[0])
    code = sys.stdin.read() if source == "-" else _read_text(Path(source))
    require_format(fmt)
    rendering = _renderer(state, timeout).render(fmt, code, standalone)
    if not rendering.ok:
        raise TutorError(f"{source}: {rendering.error}")
    for note in rendering.warnings:
        click.echo(f"warning: {source}: {note}", err=True)
    out = out or state.workspace.subject_dir(kit.name) / "diagrams"
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(source).stem if source != "-" else rendering.key[:12]
    for path in (rendering.png, rendering.svg, rendering.pdf):
        target = out / f"{stem}{path.suffix}"
        shutil.copyfile(path, target)
        click.echo(str(target))


@diagram.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Also write every PNG here, to look at them.")
@click.option("--dpi", type=click.IntRange(50, 1200), help="Resolution of the PNGs written to --out (default: the cached 150).")
@click.option("--workers", type=int, help="Parallel compiles (default: one per core).")
@_timeout_option
@pass_state
def diagram_check(state, path, out, dpi, workers, timeout):
    """Compile every diagram of a bank folder or diagrams JSONL file (default: the bundled bank).

    Prints the compile rate per format and each failure with its concise error; exits 1 if any fail.
    """
    import shutil
    import subprocess

    from .bank import DIAGRAMS, load_bank
    from .diagrams import require_format
    from .jsonl import iter_jsonl, read_jsonl
    from .models import Diagram

    kit = state.kit()
    target = path or _bundled_bank(kit)
    if target.is_dir():
        diagrams = load_bank(kit, target).diagrams
        source = target / DIAGRAMS
    else:
        diagrams, source = read_jsonl(target, Diagram), target
    lines = {d.id: n for n, d in iter_jsonl(source, Diagram, [])}
    formats = {d.format: kit.format(d.format) for d in diagrams}
    for fmt in formats.values():
        require_format(fmt)
    with _progress(len(diagrams), f"compiling {kit.name} diagrams") as advance:
        renderer = _renderer(state, timeout)
        results = renderer.render_many([(formats[d.format], d.code, False) for d in diagrams], workers, advance)
    rows = []
    for name in sorted(formats):
        mine = [r for r in results if r.format == name]
        rows.append((name, str(sum(r.ok for r in mine)), str(len(mine)), f"{sum(r.ok for r in mine) / len(mine):.0%}"))
    _table(["format", "compiled", "diagrams", "rate"], rows)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for diagram, result in zip(diagrams, results):
            if result.ok and dpi:  # e.g. 400 to see where a curly arrow starts
                command = ["pdftoppm", "-png", "-r", str(dpi), "-singlefile", str(result.pdf), str(out.resolve() / f"{diagram.format}-{diagram.id}")]
                subprocess.run(renderer.confined(command, writable=[out.resolve()], readable=[result.pdf.parent]), check=True)
            elif result.ok:
                shutil.copyfile(result.png, out / f"{diagram.format}-{diagram.id}.png")
    failures = [(d, r) for d, r in zip(diagrams, results) if not r.ok]
    for diagram, result in zip(diagrams, results):
        for note in result.warnings:
            click.echo(f"warning: {source}:{lines.get(diagram.id, '?')}: {note}", err=True)
    for diagram, result in failures:
        click.echo(f"{source}:{lines.get(diagram.id, '?')}: {diagram.description[:70]}: {result.error}", err=True)
    if failures:
        raise TutorError(f"{len(failures)} of {len(diagrams)} diagrams did not compile")


@diagram.command("extract")
@click.argument("answers", type=click.Path(path_type=Path))
@click.option("--bank", "bank_path", type=click.Path(path_type=Path), help="The questions the answers belong to, for each type's formats (default: the answers' folder).")
@click.option("--output", "-o", help="Where to write the requests JSONL, or - for stdout (default: <workspace>/<subject>/diagram-requests.jsonl).")
@pass_state
def diagram_extract(state, answers, bank_path, output):
    """Gather (DIAGRAM: ...) descriptions from gold answers into deduplicated diagram requests."""
    from .bank import QUESTIONS
    from .diagrams import extract_requests
    from .jsonl import dumps, read_jsonl, write_jsonl
    from .models import GoldAnswer, Question

    kit = state.kit()
    gold = read_jsonl(answers, GoldAnswer)
    questions_file = bank_path or answers.parent / QUESTIONS
    if questions_file.is_dir():
        questions_file = questions_file / QUESTIONS
    questions = read_jsonl(questions_file, Question) if questions_file.exists() else []
    requests, markers = extract_requests(kit, gold, questions)
    if output == "-":
        for request in requests:
            click.echo(dumps(request))
        return
    target = Path(output) if output else state.workspace.subject_dir(kit.name) / "diagram-requests.jsonl"
    write_jsonl(target, requests)
    click.echo(f"{markers} markers in {len(gold)} answers -> {len(requests)} requests ({markers - len(requests)} duplicates) -> {target}")


@cli.group()
def plugin():
    """Create subject plugins."""


@plugin.command("new")
@click.argument("name")
@click.option("--path", "parent", type=click.Path(file_okay=False, path_type=Path), default=Path("."), help="Where to create tutor-NAME/.")
def plugin_new(name, parent):
    """Scaffold a subject plugin package tutor-NAME, ready to `pip install -e`."""
    from .scaffold import scaffold

    target = scaffold(name, parent)
    click.echo(f"created {target}\nnext: pip install -e {target} && tutor --subject {name} types")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TutorError(f"{path}: {err}") from None


class _progress:
    """A progress bar on stderr when it is a terminal; silent in pipes and CI logs."""

    def __init__(self, total: int, label: str):
        self.total, self.label = total, label

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.console import Console

        console = Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, disable=not console.is_terminal)
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda *_: self.bar.advance(task)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


def _default_bank(state, kit) -> Path:
    """The bank `bank validate/stats/list` read without a PATH: the workspace's once it has one,
    else the subject's sample bank. One line on stderr says which, as the two are easy to mix up."""
    folder = state.workspace.bank_dir(kit.name)
    if (folder / "questions.jsonl").exists():
        click.echo(f"bank: {folder} (the workspace's)", err=True)
        return folder
    bank = _bundled_bank(kit)
    click.echo(f"bank: {bank} (the subject's sample bank)", err=True)
    return bank


def _bundled_bank(kit) -> Path:
    if kit.subject.bank is None:
        raise TutorError(f"subject {kit.name!r} ships no sample bank; give a bank folder or file")
    return kit.subject.bank


def _table(headers: list[str], rows: list[tuple[str, ...]]) -> None:
    """A plain aligned table: readable in a terminal, greppable in a pipe."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


from .teach_cli import teach  # noqa: E402 - stage groups live in their own modules

cli.add_command(teach)

from .train_cli import ask, dataset, models, train  # noqa: E402 - the training stage's commands

for command in (models, dataset, train, ask):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="tutor")


if __name__ == "__main__":
    sys.exit(main())
