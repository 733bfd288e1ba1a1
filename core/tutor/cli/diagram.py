"""`tutor diagram render | check | extract`: diagram code to pictures, and DIAGRAM markers to requests."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..console import progress, table
from ..errors import TutorError
from ._common import bundled_bank, pass_state, read_text


@click.group()
def diagram():
    """Render diagram code to pictures, check a bank's diagrams, extract DIAGRAM markers."""


def _renderer(state, timeout: float | None = None):
    from ..diagrams import renderer_for

    return renderer_for(state.workspace, timeout)


_timeout_option = click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                               help="Seconds one pdflatex run may take (default: timeout under [diagrams] in tutor.toml, else 30).")


@diagram.command("render")
@click.argument("source", metavar="FILE|-")
@click.option("--format", "format_name", help="Diagram format (default: the subject's first).")
@click.option("--standalone", is_flag=True, help="SOURCE is a whole LaTeX document, not a body the format wraps.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the pictures (default: <workspace>/<subject>/diagrams).")
@_timeout_option
@pass_state
def diagram_render(state, source, format_name, standalone, out, timeout):
    """Compile diagram code in the sandbox; print the paths of the PNG, SVG and PDF."""
    import shutil

    from ..diagrams import require_format

    kit = state.kit()
    fmt = kit.format(format_name or (kit.subject.diagram_formats or ["tikz"])[0])
    code = sys.stdin.read() if source == "-" else read_text(Path(source))
    require_format(fmt)
    rendering = _renderer(state, timeout).render(fmt, code, standalone)
    if not rendering.ok:
        raise TutorError(f"{source}: {rendering.error}")
    for note in rendering.warnings:
        click.echo(f"warning: {source}: {note}", err=True)
    out = out or state.workspace.pictures_dir(kit.name)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(source).stem if source != "-" else rendering.key[:12]
    for path in (rendering.png, rendering.svg, rendering.pdf):
        target = out / f"{stem}{path.suffix}"
        shutil.copyfile(path, target)
        click.echo(str(target))


@diagram.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Also write every PNG here, to look at them, as <question id>-<description>.png.")
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

    from ..bank import DIAGRAMS, load_bank
    from ..diagrams import picture_names, require_format
    from ..jsonl import iter_jsonl, read_jsonl
    from ..models import Diagram

    kit = state.kit()
    target = path or bundled_bank(kit)
    if target.is_dir():
        diagrams = load_bank(kit, target).diagrams
        source = target / DIAGRAMS
    else:
        diagrams, source = read_jsonl(target, Diagram), target
    lines = {d.id: n for n, d in iter_jsonl(source, Diagram, [])}
    formats = {d.format: kit.format(d.format) for d in diagrams}
    for fmt in formats.values():
        require_format(fmt)
    with progress(len(diagrams), f"compiling {kit.name} diagrams") as advance:
        renderer = _renderer(state, timeout)
        results = renderer.render_many([(formats[d.format], d.code, False) for d in diagrams], workers, advance)
    rows = []
    for name in sorted(formats):
        mine = [r for r in results if r.format == name]
        rows.append((name, str(sum(r.ok for r in mine)), str(len(mine)), f"{sum(r.ok for r in mine) / len(mine):.0%}"))
    table(["format", "compiled", "diagrams", "rate"], rows)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for name, result in zip(picture_names(diagrams), results):
            if result.ok and dpi:  # e.g. 400 to see where a curly arrow starts
                command = ["pdftoppm", "-png", "-r", str(dpi), "-singlefile", str(result.pdf), str(out.resolve() / name)]
                subprocess.run(renderer.confined(command, writable=[out.resolve()], readable=[result.pdf.parent]), check=True)
            elif result.ok:
                shutil.copyfile(result.png, out / f"{name}.png")
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
@click.option("--bank", "bank_path", type=click.Path(path_type=Path),
              help="The questions the answers belong to, for each type's formats (default: the answers' folder).")
@click.option("--output", "-o",
              help="Where to write the requests JSONL, or - for stdout (default: the workspace's, where `teach diagrams` reads them).")
@pass_state
def diagram_extract(state, answers, bank_path, output):
    """Gather (DIAGRAM: ...) descriptions from gold answers into deduplicated diagram requests."""
    from ..bank import QUESTIONS
    from ..diagrams import extract_requests
    from ..jsonl import dumps, read_jsonl, write_jsonl
    from ..models import GoldAnswer, Question

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
    target = Path(output) if output else state.workspace.diagram_requests(kit.name)
    write_jsonl(target, requests)
    click.echo(f"{markers} markers in {len(gold)} answers -> {len(requests)} requests ({markers - len(requests)} duplicates) -> {target}")
