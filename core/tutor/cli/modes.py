"""The tutor's modes on the command line: `answer` (alias `ask`), `explain`, `set`, `mark`, `plan`; all through tutor.Tutor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..console import say, table
from ..errors import TutorError
from ..runs import ROLES
from ._common import pass_state, read_text


def _model_option(fn):
    fn = click.option("--via", type=click.Choice(["local", "teacher"]), default="local", show_default=True,
                      help="local: the base model plus the subject's adapters; teacher: the [teacher] endpoint.")(fn)
    fn = click.option("--base", "base_only", is_flag=True, help="The base model alone, no adapter.")(fn)
    fn = click.option("--adapter", type=click.Path(exists=True, file_okay=False, path_type=Path),
                      help="This adapter instead of the newest (of the answer role, or of --role).")(fn)
    return click.option("--max-new-tokens", type=click.IntRange(1), default=384, show_default=True)(fn)


_rag_option = click.option("--rag/--no-rag", default=None, help="Put the knowledge base's best chunks into the prompt "
                           "(default: on once `tutor kb build` has run).")


def _tutor(state, via: str, base_only: bool, adapter: Path | None, max_new_tokens: int = 384, role: str = "answer",
           rag: bool | None = None):
    from ..infer.tutor import Tutor

    if via == "teacher" and (base_only or adapter):
        raise click.UsageError("--via teacher asks the teacher: it goes with neither --base nor --adapter")
    if base_only and adapter:
        raise click.UsageError("--base answers without an adapter: it does not go with --adapter")
    model = "teacher" if via == "teacher" else "base" if base_only else adapter or "latest"
    return Tutor(state.kit().name, state.workspace, model, max_new_tokens=max_new_tokens, adapter_role=role, rag=rag)


def _write_json(path: Path | None, data) -> None:
    if path is None:
        return
    from ..jsonl import write_atomic

    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    say(f"wrote {path}")


def _show_question(tutor, question_id: str | None) -> None:
    if question_id:
        from ..answers import question_text

        question = tutor.question(question_id)
        click.echo(f"{question.id}:\n{question_text(question)}\n")


def _show_text(result, max_new_tokens: int) -> None:
    if result.sources:
        click.echo("sources: " + ", ".join(f"[{source}]" for source in result.sources))
    if result.cut:
        click.echo(f"[stopped at {max_new_tokens} new tokens: --max-new-tokens allows more]")
    for drawn in result.diagrams:
        shown = f"{drawn.png} ({drawn.format})" if drawn.ok else f"not drawn: {drawn.error}"
        click.echo(f"(DIAGRAM: {drawn.description}) -> {shown}")


def _text_mode(mode: str):
    @click.command(mode)
    @click.argument("text", required=False)
    @click.option("--id", "question_id", metavar="QUESTION", help="A bank question by id (or a unique start of one).")
    @click.option("--diagrams", is_flag=True, help="Draw the reply's (DIAGRAM: ...) markers with the diagram role and compile them.")
    @click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the result as JSON.")
    @_model_option
    @_rag_option
    @pass_state
    def command(state, text, question_id, diagrams, json_path, via, base_only, adapter, max_new_tokens, rag):
        tutor = _tutor(state, via, base_only, adapter, max_new_tokens, rag=rag)
        _show_question(tutor, question_id)
        result = getattr(tutor, mode)(text, question_id=question_id, diagrams=diagrams, on_text=lambda piece: click.echo(piece, nl=False))
        click.echo()
        _show_text(result, max_new_tokens)
        say(f"model: {result.model}")
        _write_json(json_path, result.model_dump(mode="json"))

    command.help = {"answer": "Answer TEXT (or bank question --id) as the tuned tutor answers: a full-mark answer.",
                    "explain": "Explain TEXT (or bank question --id) step by step, with the mark scheme's gold answer for reference."}[mode]
    return command


explain = _text_mode("explain")
_answer_text = _text_mode("answer")


@click.command("answer")
@click.argument("text", required=False)
@click.option("--id", "question_id", metavar="QUESTION", help="A bank question by id (or a unique start of one).")
@click.option("--role", type=click.Choice(ROLES), default="answer", show_default=True,
              help="diagram: TEXT (or the question's diagram) is a description; the code is compiled.")
@click.option("--format", "format_name", metavar="FORMAT", help="Diagram format for the diagram role (default: from the description).")
@click.option("--compare", is_flag=True, help="Answer with the base model and with the adapter, one after the other.")
@click.option("--diagrams", is_flag=True, help="Draw the reply's (DIAGRAM: ...) markers with the diagram role and compile them.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the result as JSON.")
@_model_option
@_rag_option
@pass_state
@click.pass_context
def answer(ctx, state, text, question_id, role, format_name, compare, diagrams, json_path, via, base_only, adapter, max_new_tokens, rag):
    """Answer TEXT (or bank question --id) with the base model plus the subject's newest adapter (or the teacher)."""
    if bool(text) == bool(question_id):
        raise click.UsageError("give the question as TEXT or as --id QUESTION, one of them")
    if compare and (base_only or via == "teacher"):
        raise click.UsageError("--compare answers with the base model and the adapter: it goes with neither --base nor --via teacher")
    if format_name and role != "diagram":
        raise click.UsageError("--format is for the diagram role")
    if role == "diagram":
        return _draw(state, text, question_id, format_name, json_path, via, base_only, adapter, max_new_tokens)
    if not compare:
        return ctx.invoke(_answer_text, text=text, question_id=question_id, diagrams=diagrams, json_path=json_path, via=via,
                          base_only=base_only, adapter=adapter, max_new_tokens=max_new_tokens, rag=rag)
    tutor = _tutor(state, via, base_only, adapter, max_new_tokens, rag=rag)
    _show_question(tutor, question_id)
    results = {}
    for label, use_base in (("base model", True), ("tuned", False)):
        with tutor.engine.adapters_off(use_base):  # the same loaded weights: the adapter switched off, then on
            result = tutor.answer(text, question_id=question_id, diagrams=diagrams)
        click.echo(f"--- {label if use_base else f'tuned: {result.model}'} ---\n{result.text}")
        _show_text(result, max_new_tokens)
        click.echo()
        results[label] = result.model_dump(mode="json")
    _write_json(json_path, results)


def _draw(state, text, question_id, format_name, json_path, via, base_only, adapter, max_new_tokens):
    tutor = _tutor(state, via, base_only, adapter, max_new_tokens, role="diagram")
    if question_id:
        found = [d for d in tutor.bank.diagrams if d.question_id == tutor.question(question_id).id]
        if not found:
            raise TutorError(f"question {question_id!r} has no diagram in {tutor.bank.label}")
        text, format_name = found[0].description, found[0].format
        click.echo(f"{question_id} ({format_name}): {text}\n")
    drawn = tutor.draw(text, format_name)
    click.echo(f"```latex\n{drawn.code}\n```" if drawn.code else "(no code)")
    click.echo(f"diagram: {drawn.png}" if drawn.ok else f"diagram does not compile: {drawn.error}")
    _write_json(json_path, drawn.model_dump(mode="json"))


@click.command("set")
@click.option("--type", "type_id", required=True, metavar="TYPE", help="The question type (see `tutor types`).")
@click.option("--topic", metavar="TOPIC", help="One of the subject's topics (default: the setter chooses).")
@click.option("-n", "count", type=click.IntRange(1, 100), default=5, show_default=True, help="How many questions to ask for.")
@click.option("--into-bank", is_flag=True, help="Append the accepted questions and their gold answers to the workspace bank.")
@click.option("--no-gold", is_flag=True, help="Set the questions without writing their gold answers.")
@_model_option
@pass_state
def set_(state, type_id, topic, count, into_bank, no_gold, via, base_only, adapter, max_new_tokens):
    """Set -n new questions of --type with mark schemes and gold answers, checked as the bank checks its own and for novelty.

    \b
    Accepted: <workspace>/<subject>/generated/questions.jsonl (with answers.jsonl);
    rejected, with reasons: generated/rejects.jsonl beside them.
    """
    from ..console import progress
    from ..jsonl import append_jsonl

    tutor = _tutor(state, via, base_only, adapter, max_new_tokens)
    with progress(count, f"{tutor.kit.name}: setting {type_id} questions") as advance:
        result = tutor.set_questions(type_id, topic=topic, count=count, gold=not no_gold, advance=advance)
    folder = state.workspace.subject_dir(tutor.kit.name) / "generated"
    folder.mkdir(parents=True, exist_ok=True)
    if result.accepted:
        append_jsonl(folder / "questions.jsonl", result.accepted)
    if result.rejected:
        append_jsonl(folder / "rejects.jsonl", result.rejected)
    rows = [(item.question.id[:12], item.question.topic, str(item.question.marks), f"{1 - item.novelty:.2f}",
             item.question.stem.replace("\n", " ")[:70]) for item in result.accepted]
    if rows:
        table(["id", "topic", "marks", "max cosine", "stem"], rows)
    for reject in result.rejected:
        click.echo(f"rejected: {'; '.join(reject.reasons)}")
    click.echo(f"{tutor.kit.name}: {len(result.accepted)} of {count} accepted, {len(result.rejected)} rejected; in {folder}")
    if into_bank and result.accepted:
        bank = state.workspace.bank_dir(tutor.kit.name)
        bank.mkdir(parents=True, exist_ok=True)
        append_jsonl(bank / "questions.jsonl", [item.question for item in result.accepted])
        golds = [item.gold for item in result.accepted if item.gold]
        if golds:
            append_jsonl(bank / "answers.jsonl", golds)
        click.echo(f"appended {len(result.accepted)} questions and {len(golds)} gold answers to {bank}")


@click.command("mark")
@click.option("--id", "question_id", metavar="QUESTION", help="The bank question the answer is to.")
@click.option("--answer", "answer_file", metavar="FILE|-", help="The student's answer: a text file, or - for stdin.")
@click.option("--answers", "answers_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='A class\'s answers: JSONL rows {"question_id", "answer", "student"}.')
@click.option("--via", type=click.Choice(["local", "teacher"]), default="local", show_default=True,
              help="local: the deterministic rule marker; teacher: the teacher as judge, quoting its evidence.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the result(s) as JSON (default: beside --answers as <name>.marked.jsonl).")
@_rag_option
@pass_state
def mark(state, question_id, answer_file, answers_file, via, json_path, rag):
    """Mark a student's answer point by point: awarded or not, the quoted evidence, the total, and feedback."""
    if bool(answers_file) == bool(question_id or answer_file):
        raise click.UsageError("give --id QUESTION with --answer FILE|-, or --answers FILE.jsonl for a class")
    from ..infer.tutor import Tutor

    # --rag shows the judge the knowledge base's material; the rule marker never reads it (the sources are still listed).
    tutor = Tutor(state.kit().name, state.workspace, "teacher" if via == "teacher" else "base", rag=rag)
    if answers_file is None:
        if not answer_file:
            raise click.UsageError("--id needs --answer FILE (or - for stdin)")
        text = sys.stdin.read() if answer_file == "-" else read_text(Path(answer_file))
        result = tutor.mark(question_id, text)
        _show_mark(result)
        _write_json(json_path, result.model_dump(mode="json"))
        return
    from ..jsonl import append_jsonl

    rows, problems = _class_answers(answers_file)
    results = []
    for line, row in rows:
        try:
            results.append(tutor.mark(str(row.get("question_id")), str(row.get("answer") or ""), student=row.get("student")))
        except TutorError as err:
            problems.append(f"{answers_file}:{line}: {err}")
    for problem in sorted(problems, key=lambda line: int(line.removeprefix(f"{answers_file}:").split(":")[0])):  # in file order
        click.echo(problem, err=True)
    table(["student", "question", "marks", "marker"],
          [(r.student or "-", r.question_id[:12], f"{r.marks:g}/{r.out_of:g}", r.marker) for r in results])
    out = json_path or answers_file.with_suffix(".marked.jsonl")
    if out.exists():
        out.unlink()
    append_jsonl(out, results)
    click.echo(f"{len(results)} marked, {len(problems)} refused; results in {out}")


def _class_answers(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """The rows of a class's answers file, and one line (file:line: why) for each row that is not one."""
    from ..jsonl import import_dicts

    rows, problems = [], []
    for number, row, why in import_dicts(path):
        if row is None:
            problems.append(f"{path}:{number}: {why}")
        elif "question_id" not in row:
            problems.append(f"{path}:{number}: a row needs question_id and answer")
        else:
            rows.append((number, row))
    return rows, problems


def _show_mark(result) -> None:
    rows = [(f"({p.part})" if p.part else "", p.text[:60], f"{p.marks:g}", "yes" if p.awarded else "no",
             f'"{" ".join(p.evidence.split())[:50]}"' if p.evidence else p.why) for p in result.points]
    rows += [(f"({a.part})" if a.part else "", f"levels{f' ({a.strand})' if a.strand else ''}: level {a.level}", f"{a.out_of}",
              f"{a.marks:g}", f"estimated: {len(a.covered)} pieces of indicative content") for a in result.levels]
    if rows:
        table(["part", "marking point", "marks", "awarded", "evidence / why"], rows)
    click.echo(f"Total: {result.marks:g}/{result.out_of:g}" + (f" (question: {result.question_marks} marks)"
                                                                if result.out_of != result.question_marks else ""))
    if result.levelled:
        click.echo(f"Marked by levels, left to an examiner (or --via teacher): {', '.join(result.levelled)}")
    if result.truncated:
        click.echo("The answer was truncated to the length a marker reads.")
    if result.sources:
        click.echo("reference material: " + ", ".join(f"[{source}]" for source in result.sources))
    for line in result.feedback:
        click.echo(f"- {line}")
    for check in result.checks:
        click.echo(f"  check {check}")


@click.command("plan")
@click.option("--results", "results_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A student's results: JSONL of question ids with marks (or what `mark --answers` writes), or CSV question_id,marks.")
@click.option("--days", type=click.IntRange(1, 365), default=7, show_default=True, help="How many days the schedule covers.")
@click.option("--student", metavar="NAME", help="Whose plan, when the file holds a class's results (all inform the fit).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Where to write plan.md, plan.json and mastery.png.")
@pass_state
def plan(state, results_file, days, student, out):
    """A study plan from a student's results: mastery per topic, weakest first, practice questions and reviews over --days."""
    from ..infer.plan import plan_table, write_plan
    from ..infer.tutor import Tutor

    tutor = Tutor(state.kit().name, state.workspace, "base")
    study, problems = tutor.plan(results_file, days=days, student=student)
    for problem in problems:
        click.echo(problem, err=True)
    click.echo(plan_table(study))
    name = f"{results_file.stem}-{student}" if student else results_file.stem
    folder = out or state.workspace.subject_dir(tutor.kit.name) / "plans" / name
    written = write_plan(study, folder)
    click.echo(f"plan: {', '.join(str(p) for p in written.values())}")
