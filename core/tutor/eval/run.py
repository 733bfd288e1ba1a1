"""The eval stage: every model of the lineup on every item, scored by every evaluator, into a report folder.

For each model, in one load of its base model:
  answer role   the tutor's own answer prompt (dataset.tutor_messages, as trained)
                -> batched greedy replies -> every registered evaluator that
                judges the question's format (mcq, final-answer, mark-points,
                form, and any plugin's); MCQs also by log-likelihood
                (lm-evaluation-harness, MMLU's prompt); questions with a gold
                answer also by the gold answer's loss (teacher-forced);
  diagram role  the diagram prompt for each description of the set's questions
                -> code -> the sandboxed renderer, first try.
Then, with --judge teacher, a model judge marks every point-marked reply, and
report.py turns the items into the summary, report.md and plots of
<workspace>/<subject>/evals/<UTC time>/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..console import progress
from ..console import say as _say
from ..errors import TutorError
from ..jsonl import append_lines, dumps, write_atomic
from . import lineup
from .items import EvalSet, bank_set, mcq_set, narrow
from .results import DIAGRAM_COMPILES, JUDGE, MCQ_LOGLIK, RESULTS, RUN_INFO, ItemResult, ModelInfo

if TYPE_CHECKING:
    from ..models import Question
    from ..registry import SubjectKit
    from ..workspace import Workspace


@dataclass
class Options:
    split: str | None = None  # test, validation or bank; None: test, unless only MCQ files are given
    bank: Path | None = None  # a bank folder or questions file, evaluated whole
    mcq: list[Path] = field(default_factory=list)  # external multiple-choice files, one set each
    dev: Path | None = None  # an MCQ file the few-shot examples come from (else the bank's questions outside the sets)
    models: list[str] = field(default_factory=lambda: ["latest"])
    shots: int = 0
    limit: int | None = None  # the first N questions of each set
    types: list[str] | None = None
    judge: Literal["teacher"] | None = None
    engine: Literal["hf", "vllm"] = "hf"
    max_new_tokens: int = 384
    batch_size: int = 24


def evaluate(kit: SubjectKit, workspace: Workspace, options: Options, *, say: Callable[[str], None] = _say) -> tuple[Path, dict]:
    """Run the evaluation; (its folder, its summary)."""
    from . import report

    sets = _sets(kit, workspace, options, say)
    entries = lineup.parse(options.models, workspace, kit.name, workspace.config().model.base)
    shots = _shots(kit, workspace, options, sets)
    folder = _new_run(report.runs_dir(workspace, kit.name))
    info = {"subject": kit.name, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "models": [asdict(ModelInfo(e.label, e.base, str(e.answer or e.diagram or "") or None,
                                        "diagram" if e.roles == ("diagram",) else "answer")) for e in entries],
            "baseline": entries[0].label,
            "sets": [{"name": s.name, "questions": len(s.questions), "diagrams": len(s.diagrams)} for s in sets],
            "options": {k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if k == "mcq" else v)
                        for k, v in asdict(options).items()}}
    write_atomic(folder / RUN_INFO, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    say(f"evaluating {', '.join(e.label for e in entries)} on {', '.join(f'{s.name} ({len(s.questions)})' for s in sets)} -> {folder}")
    # With vLLM every reply is generated first, one server per base model, and the server stopped
    # before transformers loads the same model for what vLLM cannot do: log-likelihoods and losses.
    replies = _generate_with_vllm(kit, workspace, entries, sets, options, folder) if options.engine == "vllm" else {}
    results: list[ItemResult] = []
    for base in dict.fromkeys(e.base for e in entries):
        group = [e for e in entries if e.base == base]
        loaded = lineup.Loaded(base, group, say)
        for entry in group:
            found = _evaluate_entry(kit, workspace, Model(loaded, entry, options, replies), sets, shots)
            append_lines(folder / RESULTS, [dumps(r) for r in found])  # kept as each model finishes
            results += found
        del loaded
    failure = None
    if options.judge:
        try:
            _judge(kit, workspace, results, sets)
            write_atomic(folder / RESULTS, "".join(dumps(r) + "\n" for r in results))
        except TutorError as err:  # the report is still written, without the judge's column
            failure = err
    summary = report.write_report(folder, info, results)
    if failure:
        raise TutorError(f"{failure} (the report in {folder} has every other metric; the judge's finished marks are cached)")
    return folder, summary


def _sets(kit: SubjectKit, workspace: Workspace, options: Options, say) -> list[EvalSet]:
    sets = []
    if options.bank is not None or options.split or not options.mcq:
        sets.append(bank_set(kit, workspace, options.split or "test", options.bank))
    for path in options.mcq:
        found, problems = mcq_set(kit, path)
        for problem in problems:
            say(f"skipped: {problem}")
        sets.append(found)
    sets = narrow(kit, sets, types=options.types, limit=options.limit)
    if not any(s.questions for s in sets):
        raise TutorError("nothing to evaluate: no question is left after --types and --limit")
    return [s for s in sets if s.questions]


def _shots(kit: SubjectKit, workspace: Workspace, options: Options, sets: list[EvalSet]) -> list[Question]:
    """K few-shot MCQs: from --dev, else the bank's MCQs that no evaluated set holds (never an item's own question)."""
    if not options.shots:
        return []
    if options.dev is not None:
        pool = mcq_set(kit, options.dev)[0].questions
    else:
        from .. import dataset as ds

        evaluated = {q.id for s in sets for q in s.questions}
        pool = [q for q in ds.choose_bank(kit, workspace)[0].questions if q.is_mcq and q.id not in evaluated]
    if len(pool) < options.shots:
        raise TutorError(f"--shots {options.shots}: only {len(pool)} multiple-choice question(s) to take examples from "
                         f"({'--dev ' + str(options.dev) if options.dev else 'the bank, outside the evaluated sets'})")
    return pool[: options.shots]


def _new_run(folder: Path) -> Path:
    from ..runs import make_run

    return make_run(folder, datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))


# --- one model ---------------------------------------------------------------------------


@dataclass
class Model:
    """One entry of the lineup on its loaded base model, and where its replies come from."""

    loaded: lineup.Loaded
    entry: lineup.Entry
    options: Options
    pregenerated: dict[tuple[str, str, str], list]  # (label, role, set) -> replies generated by vLLM

    def replies(self, role: str, s: EvalSet, prompts: list[list[dict]]):
        """Greedy replies in `role` to the set's prompts: vLLM's, when it generated them, else batched transformers'."""
        if (self.entry.label, role, s.name) in self.pregenerated:
            return self.pregenerated[self.entry.label, role, s.name]
        from ..infer.generate import generate_batch

        what = "answering" if role == "answer" else "drawing the diagrams of"
        with _bar(len(prompts), f"{self.entry.label}: {what} {s.name}") as step:
            return generate_batch(self.loaded.model, self.loaded.tokenizer, prompts, max_new_tokens=self.options.max_new_tokens,
                                  batch_size=self.options.batch_size, advance=step)


def _evaluate_entry(kit: SubjectKit, workspace: Workspace, model: Model, sets: list[EvalSet], shots: list[Question]) -> list[ItemResult]:
    results = []
    for role, items in (("answer", _answer_items), ("diagram", _diagram_items)):
        if role in model.entry.roles:
            with model.loaded.use(model.entry, role):
                for s in sets:
                    results += items(kit, workspace, model, s, shots)
    return results


def _answer_prompts(kit: SubjectKit, workspace: Workspace, s: EvalSet, rag: bool = False) -> list[list[dict]]:
    """The tutor's own prompt for each question; with `rag`, the knowledge base's chunks for it before the question
    (the train split's worked examples only: an item never retrieves its own answer)."""
    from .. import dataset as ds

    prompts = [ds.tutor_messages(kit, q, workspace.template_dirs(kit.name)) for q in s.questions]
    if not rag:
        return prompts
    from ..answers import question_text
    from ..kb import KnowledgeBase
    from ..prompts import with_material

    base = KnowledgeBase(workspace, kit.name)
    k = workspace.config().kb.k
    user_dirs = workspace.template_dirs(kit.name)
    return [with_material(kit, user_dirs, messages, base.search(question_text(q), k))[0] for q, messages in zip(s.questions, prompts)]


def _diagram_prompts(kit: SubjectKit, workspace: Workspace, s: EvalSet) -> list[list[dict]]:
    from ..prompts import render

    user_dirs = workspace.template_dirs(kit.name)
    return [render(kit, "diagram", user_dirs, description=d.description, format=kit.format(d.format)) for d in s.diagrams]


def _answer_items(kit: SubjectKit, workspace: Workspace, model: Model, s: EvalSet, shots: list[Question]) -> list[ItemResult]:
    from ..default_plugins.evaluators import chosen_option
    from ..models import Score
    from .scoring import score_reply

    prompts = _answer_prompts(kit, workspace, s, model.entry.rag)
    replies = model.replies("answer", s, prompts)
    label, loaded, batch = model.entry.label, model.loaded, model.options.batch_size
    results = []
    for question, prompt, reply in zip(s.questions, prompts, replies, strict=True):
        qtype = kit.type(question.type)
        result = ItemResult(model=label, set=s.name, kind="question", item=s.item_id(question), type=question.type,
                            topic=question.topic, level=qtype.level, format=qtype.format, prompt=prompt, output=reply.text,
                            cut=reply.cut, scores=score_reply(kit, question, reply.text))
        if question.is_mcq:
            result.gold = question.key or ""
            result.chosen["mcq"] = chosen_option(question, reply.text)
        results.append(result)
    mcqs = [(n, q) for n, q in enumerate(s.questions) if q.is_mcq]
    if mcqs:
        from .loglik import mcq_logliks

        # lm-evaluation-harness reports no progress to a caller: a bar without a count says it is at work.
        with progress(None, f"{label}: {len(mcqs)} MCQs of {s.name} by log-likelihood"):
            logliks = mcq_logliks(loaded.model, loaded.tokenizer, [q for _, q in mcqs], subject_title=kit.subject.title.lower(),
                                  shots=shots, batch_size=batch)
        for (n, question), found in zip(mcqs, logliks, strict=True):
            pick = max(found, key=found.get)
            results[n].logliks = found
            results[n].chosen[MCQ_LOGLIK] = pick
            results[n].scores[MCQ_LOGLIK] = Score(marks=float(pick == question.key), out_of=1, feedback=f"chose {pick}; key {question.key}")
    with_gold = [(n, q) for n, q in enumerate(s.questions) if q.id in s.gold and not s.external]
    if with_gold:
        from .loglik import answer_loss

        conversations = [prompts[n] + [{"role": "assistant", "content": s.gold[q.id]}] for n, q in with_gold]
        with progress(None, f"{label}: loss of {len(with_gold)} gold answers of {s.name}"):
            losses = answer_loss(loaded.model, loaded.tokenizer, conversations, batch_size=batch)
        for (n, _), loss in zip(with_gold, losses, strict=True):
            results[n].loss = loss
    return results


def _diagram_items(kit: SubjectKit, workspace: Workspace, model: Model, s: EvalSet, shots: list[Question]) -> list[ItemResult]:
    """The set's diagram descriptions drawn, and the code compiled by the sandboxed renderer: once, no repair round."""
    if not s.diagrams:
        return []
    from ..default_plugins.rewards import diagram_code
    from ..diagrams import renderer_for
    from ..models import Score

    formats = [kit.format(d.format) for d in s.diagrams]
    prompts = _diagram_prompts(kit, workspace, s)
    replies = model.replies("diagram", s, prompts)
    codes = [diagram_code(r.text, f.name) for r, f in zip(replies, formats)]
    renderings = iter(renderer_for(workspace).render_many([(f, code, False) for f, code in zip(formats, codes) if code]))
    results = []
    for diagram, fmt, prompt, reply, code in zip(s.diagrams, formats, prompts, replies, codes, strict=True):
        if code:
            rendering = next(renderings)
            ok, why = rendering.ok, "compiles" if rendering.ok else str(rendering.error)
        else:
            ok, why = False, "the reply has no diagram code"
        results.append(ItemResult(model=model.entry.label, set=s.name, kind="diagram", item=diagram.id, format=fmt.name, prompt=prompt,
                                  output=reply.text, cut=reply.cut,
                                  scores={DIAGRAM_COMPILES: Score(marks=float(ok), out_of=1, feedback=why[:500])}))
    return results


@contextmanager
def _bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar counting items, with items per second beside it."""
    started, done = time.monotonic(), 0
    with progress(total, label, extra="{task.fields[rate]}", rate="") as advance:
        def step(n: int = 1) -> None:
            nonlocal done
            done += n
            advance(advance=n, rate=f"{done / max(time.monotonic() - started, 1e-9):.2f} items/s")

        yield step


def _generate_with_vllm(kit: SubjectKit, workspace: Workspace, entries: list[lineup.Entry], sets: list[EvalSet], options: Options,
                        folder: Path) -> dict[tuple[str, str, str], list]:
    """Every reply of every entry, through one vLLM server per base model with the entries' adapters as LoRA modules."""
    from ..basemodels import resolve
    from . import vllm

    out: dict[tuple[str, str, str], list] = {}
    for base in dict.fromkeys(e.base for e in entries):
        group = [e for e in entries if e.base == base]
        adapters = {f"{role}-{path.name}": path for e in group for role, path in (("answer", e.answer), ("diagram", e.diagram)) if path}
        port = vllm.free_port()
        command = vllm.serve_command(resolve(base).location, adapters, port=port)
        with vllm.VllmServer(command, port=port, log=folder / "vllm.log") as url:
            for e in group:
                for role in e.roles:
                    path = e.answer if role == "answer" else e.diagram
                    for s in sets:
                        prompts = _answer_prompts(kit, workspace, s) if role == "answer" else _diagram_prompts(kit, workspace, s)
                        if prompts:
                            with _bar(len(prompts), f"{e.label}: {role} replies for {s.name} (vLLM)") as step:
                                out[e.label, role, s.name] = vllm.generate_vllm(
                                    url, f"{role}-{path.name}" if path else vllm.BASE, prompts, max_new_tokens=options.max_new_tokens,
                                    advance=step)
    return out


# --- the model judge ----------------------------------------------------------------------


def _judge(kit: SubjectKit, workspace: Workspace, results: list[ItemResult], sets: list[EvalSet]) -> None:
    """Mark every reply the rule marker marked by points with the teacher as judge, into scores['judge']."""
    from .judge import mark_with_judge

    by_item = {(s.name, s.item_id(q)): q for s in sets for q in s.questions}
    todo = [r for r in results if r.kind == "question" and r.scores.get("mark-points") and r.scores["mark-points"].points]
    if not todo:
        return
    with progress(len(todo), "judge: marking replies") as advance:
        scores = mark_with_judge(kit, workspace, [(by_item[r.set, r.item], r.output) for r in todo], advance=lambda *_: advance())
    for result, score in zip(todo, scores, strict=True):
        if score is not None:
            result.scores[JUDGE] = score
