"""`tutor.Tutor`: answer, explain, set, mark and plan, one API for the CLI, the server and the web page.

    from tutor import Tutor
    tutor = Tutor("physics", workspace="tutor-workspace")            # base model + the newest adapters
    tutor = Tutor("physics", model="teacher")                        # the teacher's endpoint instead
    tutor.answer(question_id="...").text
    tutor.mark(question_id="...", answer="...").marks
    for piece in tutor.stream("explain", text="Why does ..."):        # text deltas; the result after the last
        print(piece, end="")

Every mode renders its prompt through the subject's layered templates (user >
subject > core), runs on the engine, and returns a pydantic result
(infer/results.py). `on_text` (every mode that writes text) receives the reply
piece by piece as it is decoded; `stream` turns that into an iterator.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import TutorError, UnknownName
from ..workspace import Workspace
from .results import DiagramResult, MarkResult, SetQuestion, SetReject, SetResult, TextResult

NOVELTY_LIMIT = 0.85  # the and the question-generation seed's rule: more similar than this is a copy
EXAMPLES_SHOWN = 8  # existing questions of the type shown to the setter, so it knows what to avoid


class Tutor:
    """One subject's tutor. `model`: 'latest' (the base model plus the newest adapters), 'base', an adapter folder
    (used for `adapter_role`, the newest for the other role), or 'teacher' (the [teacher] endpoint)."""

    def __init__(self, subject: str, workspace: str | Path | Workspace = "tutor-workspace", model: str | Path = "latest", *,
                 max_new_tokens: int = 384, adapter_role: str = "answer", say: Callable[[str], None] | None = None, engine=None,
                 rag: bool | None = None):
        from ..console import say as default_say
        from ..registry import get_subject
        from .engine import LocalEngine, TeacherEngine

        self.kit = get_subject(subject)
        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
        if engine is not None:  # the server's: its batcher, shared by every request
            self.engine = engine
        elif str(model) == "teacher":
            self.engine = TeacherEngine(self.workspace, self.kit.name)
        elif str(model) in ("latest", "base"):
            self.engine = LocalEngine(self.workspace, self.kit.name, base_only=str(model) == "base", max_new_tokens=max_new_tokens,
                                      say=say or default_say)
        else:
            folder = Path(model)
            if not folder.is_dir():
                raise UnknownName("model", str(model), ["latest", "base", "teacher", "an adapter folder"])
            self.engine = LocalEngine(self.workspace, self.kit.name, adapter=folder, adapter_role=adapter_role,
                                      max_new_tokens=max_new_tokens, say=say or default_say)
        self._bank = None
        self._kb = None
        self.rag = rag  # None: on when the subject's knowledge base has been built (`tutor kb build`)
        self._say = say or default_say

    # --- the bank the modes draw questions from ------------------------------------------------

    @property
    def bank(self):
        """The bank the answer dataset was built from, else the workspace's, else the sample bank (as `ask` chose)."""
        if self._bank is None:
            self._bank = tutor_bank(self.kit, self.workspace)
        return self._bank

    def question(self, question_id: str):
        """A bank question by id (or a unique prefix); an unknown one names the closest ids."""
        import difflib

        by_id = {q.id: q for q in self.bank.questions}
        if question_id in by_id:
            return by_id[question_id]
        prefixed = [q for q in by_id if q.startswith(question_id)]
        if len(prefixed) == 1:
            return by_id[prefixed[0]]
        close = prefixed or difflib.get_close_matches(question_id, list(by_id), n=5, cutoff=0.3)
        raise TutorError(f"unknown question id {question_id!r} in {self.bank.label}; closest: {', '.join(close) or '(none)'}")

    def _templates(self) -> list[Path]:
        return self.workspace.template_dirs(self.kit.name)

    # --- answer and explain ----------------------------------------------------------------------

    def answer(self, text: str | None = None, *, question_id: str | None = None, diagrams: bool = False,
               on_text: Callable[[str], None] | None = None) -> TextResult:
        """A full-mark answer in the style the adapter was trained on (dataset.tutor_messages for a bank question)."""
        from .. import dataset as ds

        question = self._given(text, question_id)
        if question is not None:
            messages = ds.tutor_messages(self.kit, question, self._templates())
        else:
            system = ds.tutor_system_prompt(self.kit, self._templates())
            messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        return self._text("answer", messages, question, diagrams, on_text)

    def explain(self, text: str | None = None, *, question_id: str | None = None, diagrams: bool = False,
                on_text: Callable[[str], None] | None = None) -> TextResult:
        """A step-by-step explanation: the explain template, with the gold answer for reference when the bank has one."""
        from ..prompts import question_context, render

        question = self._given(text, question_id)
        if question is None:  # free text: no type, marks or mark scheme to render the explain template with
            from .. import dataset as ds

            messages = [{"role": "system", "content": ds.tutor_system_prompt(self.kit, self._templates())},
                        {"role": "user", "content": f"Explain, step by step, how to answer this question:\n\n{text.strip()}"}]
        else:
            gold = next(iter(self.bank.answers_to(question.id)), None)
            messages = render(self.kit, "explain", self._templates(), **question_context(self.kit, question, gold))
        return self._text("explain", messages, question, diagrams, on_text)

    def _given(self, text: str | None, question_id: str | None):
        if bool(text and text.strip()) == bool(question_id):
            raise TutorError("give the question as text or as a bank question id, one of them")
        return self.question(question_id) if question_id else None

    def _text(self, mode: str, messages: list[dict], question, diagrams: bool, on_text) -> TextResult:
        from ..answers import question_text
        from ..prompts import with_material

        asked = messages[-1]["content"]
        messages, sources = with_material(self.kit, self._templates(), messages,
                                          self.retrieve(question_text(question) if question is not None else asked))
        done = self.engine.complete(messages, role="answer", on_text=on_text)
        drawn = self.draw_diagrams(done.text) if diagrams else []
        return TextResult(mode=mode, subject=self.kit.name, question_id=question.id if question else None,
                          question=asked, text=done.text, cut=done.cut, model=done.model, diagrams=drawn, sources=sources)

    # --- the knowledge base --------------------------------------------------------------------------

    def retrieve(self, query: str) -> list:
        """The knowledge base's best chunks for `query` when retrieval is on ([] when off)."""
        base = self.knowledge_base()
        if self.rag is None:
            self.rag = base.exists()
        if not self.rag:
            return []
        return base.search(query, self.workspace.config().kb.k)

    def knowledge_base(self):
        """The subject's KnowledgeBase, opened once (copies of this Tutor, as the server makes, share it and its model)."""
        from ..kb import KnowledgeBase

        if self._kb is None:
            self._kb = KnowledgeBase(self.workspace, self.kit.name, self._say)
        return self._kb

    def material(self, hits: list) -> str:
        """The retrieved chunks as the `_material.j2` template piece renders them (a subject may override it)."""
        from ..prompts import render_material

        return render_material(self.kit, self._templates(), hits)

    # --- diagrams ------------------------------------------------------------------------------------

    def draw_diagrams(self, text: str) -> list[DiagramResult]:
        """Each (DIAGRAM: ...) marker of `text` drawn by the diagram role and compiled in the sandbox, with one repair round."""
        from ..markers import MarkerError, find_diagrams

        try:
            markers = find_diagrams(text)
        except MarkerError as err:
            return [DiagramResult(description="", ok=False, error=f"the reply's diagram markers are malformed: {err}")]
        drawn = []
        for marker in markers:
            try:
                drawn.append(self.draw(marker.description))
            except TutorError as err:  # no diagram model (no adapter, no teacher): the marker stays as text, with why
                drawn.append(DiagramResult(description=marker.description, ok=False, error=str(err)))
        return drawn

    def draw(self, description: str, format_name: str | None = None) -> DiagramResult:
        from ..default_plugins.rewards import diagram_code
        from ..diagrams import renderer_for
        from ..prompts import render

        fmt = self.kit.format(format_name) if format_name else self.kit.format_for(description)
        messages = render(self.kit, "diagram", self._templates(), description=description, format=fmt)
        renderer = renderer_for(self.workspace)
        result = DiagramResult(description=description, format=fmt.name, ok=False)
        for round_ in (1, 2):
            reply = self.engine.complete(messages, role="diagram").text
            code = diagram_code(reply, fmt.name)
            result.rounds, result.code = round_, code
            if not code:
                result.error, repair = "the reply has no diagram code", "Your reply had no code. Reply with one ```latex code block."
            else:
                rendering = renderer.render(fmt, code)
                if rendering.ok:
                    result.ok, result.error = True, ""
                    result.png = str(rendering.png)
                    result.svg = str(rendering.svg) if rendering.svg else None
                    return result
                result.error, repair = str(rendering.error), rendering.error.for_repair()
            shown = f"```latex\n{code or reply[:2000]}\n```"
            messages = [*messages, {"role": "assistant", "content": shown}, {"role": "user", "content": repair}]
        return result

    # --- mark ----------------------------------------------------------------------------------------

    def mark(self, question_id: str, answer: str, *, student: str | None = None) -> MarkResult:
        """The answer marked point by point: by the rules with a local model, by the teacher as judge with model='teacher'."""
        from ..answers import question_text
        from .engine import TeacherEngine
        from .marking import mark_answer

        question = self.question(question_id)
        hits = self.retrieve(question_text(question))
        return mark_answer(self.kit, question, answer, workspace=self.workspace, judge=isinstance(self.engine, TeacherEngine),
                           student=student, material=self.material(hits) if hits else None,
                           sources=list(dict.fromkeys(h.source for h in hits)))

    # --- set -------------------------------------------------------------------------------------------

    def set_questions(self, type_id: str, *, topic: str | None = None, count: int = 5, gold: bool = True,
                      on_text: Callable[[str], None] | None = None, advance: Callable[[], None] | None = None) -> SetResult:
        """`count` new questions of a type, each checked as the bank checks its own, for novelty, and with a gold answer."""
        from ..prompts import question_context, render

        qtype = self.kit.type(type_id)
        if topic is not None and topic not in self.kit.subject.topics:
            raise UnknownName("topic", topic, self.kit.subject.topics)
        same_type = [q for q in self.bank.questions if q.type == qtype.id]
        shown = [q for q in same_type if topic is None or q.topic == topic][:EXAMPLES_SHOWN] or same_type[:EXAMPLES_SHOWN]
        result = SetResult(subject=self.kit.name, type=qtype.id, topic=topic)
        if not same_type:
            raise TutorError(f"the bank has no {qtype.id} question to show the setter; add one to {self.bank.label}")
        known = list(self.bank.questions)
        for n in range(count):
            context = question_context(self.kit, same_type[n % len(same_type)], topic=topic, examples=shown)
            context["type"] = qtype
            messages = render(self.kit, "set", self._templates(), **context)
            if n:  # the same prompt would give the same greedy (or cached) reply: ask for another one
                messages[-1]["content"] += f"\n\nThis is question {n + 1} of {count}: make it different from the earlier ones."
            done = self.engine.complete(messages, role="answer", on_text=on_text, item=f"set-{qtype.id}-{n}")
            if advance:
                advance()
            question, reasons = self._parse_set(done.text, qtype, topic, done.model)
            if question is not None:
                novelty, nearest = _novelty(question, known)
                if novelty < 1 - NOVELTY_LIMIT:
                    reasons.append(f"too like {nearest}: TF-IDF cosine {1 - novelty:.2f} > {NOVELTY_LIMIT}")
            if reasons:
                result.rejected.append(SetReject(text=done.text, reasons=reasons, model=done.model))
                continue
            accepted = SetQuestion(question=question, novelty=round(novelty, 3), nearest=nearest, model=done.model,
                                   checks=["the bank's checks", f"novel: cosine {1 - novelty:.2f} <= {NOVELTY_LIMIT}"])
            if gold:
                problem = self._gold_for(accepted)
                if problem:
                    result.rejected.append(SetReject(text=done.text, reasons=[problem], model=done.model))
                    continue
            known.append(question)
            result.accepted.append(accepted)
        return result

    def _parse_set(self, text: str, qtype, topic: str | None, model: str):
        """(a Question from the setter's JSON reply, []) or (None, reasons)."""
        from pydantic import ValidationError

        from ..bank import _Checker
        from ..models import Question, Source

        data = _json_object(text)
        if data is None:
            return None, ["no JSON question in the reply"]
        data = {k: v for k, v in data.items() if k not in ("id", "source", "subject", "type")}
        data.setdefault("topic", topic)
        try:
            question = Question.model_validate({**data, "subject": self.kit.name, "type": qtype.id, "source": Source(name=f"set:{model}")})
        except ValidationError as err:
            return None, [f"{'.'.join(map(str, e['loc'])) or 'question'}: {e['msg']}" for e in err.errors()[:5]]
        problems: list = []
        _Checker(self.kit, problems).question("reply", 1, question)
        reasons = [f"{p.field}: {p.message}" if p.field else p.message for p in problems]
        if topic is not None and question.topic != topic:
            reasons.append(f"topic {question.topic!r}, not the {topic!r} asked for")
        return (None, reasons) if reasons else (question, [])

    def _gold_for(self, accepted: SetQuestion) -> str | None:
        """Write the gold answer (the teacher's answer prompt); why not, or None. Calculations: the answer's numbers
        must agree with the mark scheme's final answers (the final-answer evaluator, to their significant figures)."""
        from ..models import GoldAnswer
        from ..registry import registry
        from ..teach import answer_messages, check_answer

        question = accepted.question
        qtype = self.kit.type(question.type)
        done = self.engine.complete(answer_messages(self.kit, self._templates(), question), role="answer")
        why = check_answer(question, qtype, done.text, "length" if done.cut else "stop")
        if why:
            return f"its gold answer was refused: {why}"
        if question.final_answers:
            score = registry().evaluators["final-answer"].score(question, done.text)
            if score.marks < score.out_of:
                return f"the gold answer's final answers disagree with the mark scheme's: {score.feedback}"
            accepted.checks.append("final answers recomputed by the gold answer agree")
        accepted.gold = GoldAnswer(question_id=question.id, text=done.text, author=done.model)
        return None

    # --- plan ----------------------------------------------------------------------------------------

    def plan(self, results: Path, *, days: int = 7, student: str | None = None):
        """(StudyPlan, problems): a study plan from a student's results file (infer/plan.py)."""
        from .plan import make_plan, read_results

        attempts, problems = read_results(results, self.bank)
        if not attempts:
            first = f" ({len(problems)} bad rows, the first: {problems[0]})" if problems else ""
            raise TutorError(f"{results}: no usable results{first}")
        return make_plan(self.kit, self.bank, attempts, days=days, student=student), problems

    # --- streaming -------------------------------------------------------------------------------------

    def stream(self, mode: str, *args, **kwargs) -> Streamed:
        """Run a mode in a thread; iterate for its text deltas, then read `.result`."""
        modes = {"answer": self.answer, "explain": self.explain, "set": self.set_questions}
        if mode not in modes:
            raise UnknownName("streaming mode", mode, list(modes))
        return Streamed(lambda on_text: modes[mode](*args, on_text=on_text, **kwargs))


class TutorBank:
    """The questions, gold answers and diagrams the modes draw on, and where they came from."""

    def __init__(self, bank, label: str):
        self.questions, self.diagrams, self.label = bank.questions, bank.diagrams, label
        self.answers_to = bank.answers_to


def tutor_bank(kit, workspace: Workspace) -> TutorBank:
    """The bank the answer dataset was built from, else the one `dataset build` would choose: the questions a
    tuned model was trained and held out on, so `--id` means the same question in every stage."""
    from .. import dataset as ds
    from .. import runs
    from ..bank import load_bank

    folder = ds.dataset_dir(workspace, kit.name, "answer")
    if (folder / ds.META).is_file():
        where = runs.read_meta(folder, ds.META).get("bank_path")
        if where and Path(where).exists():
            return TutorBank(load_bank(kit, Path(where)), where)
    bank, label, _ = ds.choose_bank(kit, workspace)
    return TutorBank(bank, label.replace("`", ""))


class Streamed:
    """An iterator of text deltas from a mode running in a thread; `.result` once it is exhausted.
    The mode's own error is raised by the iteration, after the text that came before it."""

    _END = object()

    def __init__(self, run: Callable[[Callable[[str], None]], object]):
        self.result = None
        self._pieces: queue.Queue = queue.Queue()
        self._error: BaseException | None = None

        def work():
            try:
                self.result = run(self._pieces.put)
            except BaseException as err:  # noqa: BLE001 - handed to the iterating thread
                self._error = err
            finally:
                self._pieces.put(self._END)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        while (piece := self._pieces.get()) is not self._END:
            yield piece
        self._thread.join()
        if self._error is not None:
            raise self._error


def _json_object(text: str) -> dict | None:
    """The first JSON object in a reply (bare, or in a ```json block)."""
    block = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.DOTALL)
    candidates = [block.group(1)] if block else []
    start = text.find("{")
    if start >= 0:
        candidates.append(text[start:text.rfind("}") + 1])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def _novelty(question, known: list) -> tuple[float, str | None]:
    """(1 - the highest TF-IDF cosine to a known question, the id of that question)."""
    from ..answers import question_text
    from ..rewards_text import tfidf_cosine

    if not known:
        return 1.0, None
    texts = [question_text(q) for q in known]
    mine = question_text(question)
    sims = tfidf_cosine([mine], texts, texts + [mine])[0]
    best = int(sims.argmax())
    return 1.0 - float(sims[best]), known[best].id
