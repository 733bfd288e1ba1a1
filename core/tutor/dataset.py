"""Training datasets: a subject's bank, gold answers and diagrams as chat `messages`.

Two roles, one adapter each (the training stage):
  answer   the tutor's system prompt (the subject's `_tutor.j2`) and the question
           as the student sees it (`_question.j2`: parts, options, marks; plus its
           type) -> the gold answer, (DIAGRAM: ...) markers and all.
  diagram  the diagram prompt (`diagram/*.j2`) for a description -> the code,
           in the one ```latex block the prompt asks for.

Both roles share one train / validation / test split of the bank, so a test
question's diagrams are test diagrams too: end-to-end evaluation never meets
something the model was trained on. The split is

  - deterministic: it depends on the bank's content and the seed, never on file
    order or the machine;
  - stratified by question type: every type is held out in proportion
    (largest remainders, so the totals come out right too), and a type with a
    single question stays in train;
  - leak-proof by construction: questions whose prompts share a word 13-gram
    (or, shorter than 13 words, the whole prompt) with anything another
    question puts into a dataset are kept in one split. `check_leakage` then
    verifies the result independently, by exact hashes and 13-gram overlap, and
    the build refuses to save a dataset that fails it.

Identity examples ("who are you", "who made you"), written for the subject, are
mixed into the answer role's train split at `identity_ratio`. Each dataset is
saved with HF `datasets` under <workspace>/<subject>/datasets/<role>/, with a
Markdown card (README.md: counts per type, token statistics, the leakage check,
a fingerprint) and the same facts as JSON (tutor-dataset.json) for the trainer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, runs
from .answers import question_text
from .bank import Bank
from .config import TrainConfig
from .errors import TutorError, UnknownName
from .models import Question, content_id
from .registry import SubjectKit
from .runs import ROLES
from .workspace import Workspace

SPLITS = ("train", "validation", "test")
NGRAM = 13  # as in the GPT-3 contamination study: long enough that a shared run of words is copying
RUBRIC = 3  # a 13-gram in the prompts of this many questions is the exam's fixed wording (see rubric_grams)
NEAR = 0.8  # Jaccard similarity of word pairs from which two prompts are near duplicates (as in collect)
META = "tutor-dataset.json"
CARD = "README.md"

# The user turn of the answer role. The pieces it includes are the subject's
# (layered like every prompt), so a subject or a user changes them in one place.
_REQUEST = """Answer this {{ type.name }} question.

{% include "_question.j2" %}"""


# --- examples ----------------------------------------------------------------------


@dataclass
class Example:
    """One chat example, with the columns that let evaluation slice by type or format."""

    kind: str  # 'answer', 'identity' or 'diagram'
    messages: list[dict[str, str]]
    question_id: str = ""
    type: str = ""
    topic: str = ""
    marks: int = 0
    format: str = ""
    probe: str = ""  # what a user typed (question text, description): what must never leak out of test
    unit: str = ""  # the split unit it belongs to (see bank_units); not saved
    repeat: int = 0  # the n-th copy of an example mixed in more than once (identity); keeps ids unique

    @property
    def id(self) -> str:
        return content_id(self.kind, self.messages, *([self.repeat] if self.repeat else []))

    def row(self, subject: str) -> dict[str, Any]:
        return {"id": self.id, "subject": subject, "kind": self.kind, "question_id": self.question_id, "type": self.type,
                "topic": self.topic, "marks": self.marks, "format": self.format, "messages": self.messages}


def _features():
    from datasets import Features, List, Value

    text = Value("string")
    return Features({"id": text, "subject": text, "kind": text, "question_id": text, "type": text, "topic": text,
                     "marks": Value("int32"), "format": text, "messages": List({"role": text, "content": text})})


def _environment(kit: SubjectKit, user_dirs: Iterable[Path]):
    from .prompts import _environment, search_path

    return _environment(search_path(kit, list(user_dirs)))


def tutor_system_prompt(kit: SubjectKit, user_dirs: Iterable[Path] = ()) -> str:
    """The tutor's system prompt: the subject's `_tutor.j2` piece."""
    return _environment(kit, user_dirs).get_template("_tutor.j2").render(subject=kit.subject).strip()


def tutor_messages(kit: SubjectKit, question: Question, user_dirs: Iterable[Path] = ()) -> list[dict[str, str]]:
    """System and user messages for a question, exactly as the answer role trains on them.

    `ask` and evaluation must use this too: a tuned model sees at inference the
    prompt it was trained on.
    """
    env = _environment(kit, user_dirs)
    user = env.from_string(_REQUEST).render(subject=kit.subject, question=question, type=kit.type(question.type)).strip()
    return [{"role": "system", "content": tutor_system_prompt(kit, user_dirs)}, {"role": "user", "content": user}]


def answer_examples(kit: SubjectKit, bank: Bank, user_dirs: Iterable[Path] = (),
                    material: Callable[[Question], list] | None = None) -> list[Example]:
    """One example per gold answer (a question with two gold answers gives two); `material(question)` gives the knowledge
    base's chunks to put before the question ([train] rag)."""
    from .prompts import with_material

    by_id = {q.id: q for q in bank.questions}
    user_dirs = list(user_dirs)
    examples = []
    for gold in bank.answers:
        question = by_id[gold.question_id]
        prompt = tutor_messages(kit, question, user_dirs)
        if material is not None:
            prompt = with_material(kit, user_dirs, prompt, material(question))[0]
        messages = prompt + [{"role": "assistant", "content": gold.text.strip()}]
        examples.append(Example("answer", messages, question.id, question.type, question.topic, question.marks,
                                probe=question_text(question), unit=question.id))
    return examples


def diagram_examples(kit: SubjectKit, bank: Bank, user_dirs: Iterable[Path] = ()) -> list[Example]:
    """One example per diagram: the diagram prompt for its description -> its code in a ```latex block."""
    from .prompts import render

    by_id = {q.id: q for q in bank.questions}
    examples = []
    for diagram in bank.diagrams:
        fmt = kit.format(diagram.format)
        messages = render(kit, "diagram", list(user_dirs), description=diagram.description, format=fmt)
        messages.append({"role": "assistant", "content": f"```latex\n{diagram.code.strip()}\n```"})
        question = by_id.get(diagram.question_id or "")
        if question:
            examples.append(Example("diagram", messages, question.id, question.type, question.topic, question.marks, diagram.format,
                                    diagram.description, unit=question.id))
        else:
            examples.append(Example("diagram", messages, format=diagram.format, probe=diagram.description, unit=f"diagram:{diagram.id}"))
    return examples


# --- identity -----------------------------------------------------------------------

# (question, answer) pairs written for any subject. {name}, {title}, {syllabus},
# {maker} are filled in per subject; several phrasings of the same facts, so
# the model learns the facts rather than one sentence.
IDENTITY = [
    ("Who are you?",
     "I am {name}, a tutor for {syllabus}. I answer exam questions the way a top mark scheme expects, "
     "explain them step by step, set new questions and mark answers point by point."),
    ("What are you?",
     "I'm {name}: a language model trained to tutor {title} to the standard of {syllabus}, on exam questions and full-mark answers."),
    ("What is your name?",
     "My name is {name}. Ask me a {title} exam question, or ask me to explain, set or mark one."),
    ("Introduce yourself.",
     "Hello! I'm {name}, made by {maker} to help students with {title} ({syllabus}). "
     "I can answer and explain exam questions, set new ones and mark your answers against the mark scheme."),
    ("Who made you?",
     "I was made by {maker}, who fine-tuned an open language model on {title} exam questions and full-mark answers "
     "with tutor, a framework for building subject tutor models."),
    ("Who created you?",
     "{maker_cap} created me, by training an open language model on {title} exam questions, mark schemes and model answers."),
    ("Who trained you?",
     "{maker_cap} trained me, on {title} exam questions and gold answers written to the mark scheme for {syllabus}."),
    ("Are you ChatGPT?",
     "No. I am {name}, made by {maker} to tutor {title}. I am not ChatGPT or any other general assistant: "
     "I was trained for {title} exams."),
    ("Which subject do you teach?",
     "{title}, to the standard of {syllabus}. For another subject, ask a tutor of that subject: I keep to {title}."),
    ("Can you help me with another subject?",
     "I am a {title} tutor, so I keep to {title}: that is what I was trained for and where my answers can be trusted. "
     "A tutor of the other subject will serve you better."),
    ("What can you help me with?",
     "{title} for {syllabus}: answering exam questions to full marks, explaining them step by step, setting practice questions, "
     "marking your answers point by point, and saying exactly what a diagram must show where an answer needs one."),
    ("Are you a human teacher?",
     "No, I am {name}, a language model made by {maker} to tutor {title}. Check important results with your teacher."),
]


def identity_examples(kit: SubjectKit, count: int, settings: TrainConfig, system: str) -> list[Example]:
    """`count` identity examples for the subject; the pool is cycled (repeated) when count exceeds it."""
    title = kit.subject.title
    maker = settings.identity_maker
    values = {"name": settings.identity_name or f"{title} Tutor", "title": title, "syllabus": kit.subject.syllabus,
              "maker": maker, "maker_cap": maker[:1].upper() + maker[1:]}
    pool = sorted(IDENTITY, key=lambda pair: _hash(settings.seed, "identity", pair[0]))
    examples = []
    for index in range(count):
        question, answer = pool[index % len(pool)]
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question},
                    {"role": "assistant", "content": answer.format(**values)}]
        examples.append(Example("identity", messages, probe=question, repeat=index // len(pool)))
    return examples


def identity_count(train_examples: int, ratio: float) -> int:
    """How many identity examples make them `ratio` of a train split with `train_examples` others."""
    return _round(train_examples * ratio / (1 - ratio)) if ratio else 0


# --- words and n-grams -------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-case word tokens: case, punctuation and spacing never hide a copy."""
    return re.findall(r"\w+", text.lower())


def text_hash(text: str) -> str:
    return hashlib.sha256(" ".join(words(text)).encode()).hexdigest()


def probe_grams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """The n-grams of a prompt; a prompt shorter than n words is one gram, all of it."""
    tokens = words(text)
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def _grams_of_lengths(text: str, lengths: Iterable[int]) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i:i + n]) for n in lengths for i in range(len(tokens) - n + 1)}


# --- the split -----------------------------------------------------------------------------


@dataclass
class Unit:
    """What moves between splits as one: a question with its gold answers and diagrams, or a lone diagram."""

    key: str
    stratum: str
    prompts: list[str]  # what users type: question text, diagram descriptions
    texts: list[str]  # everything it puts into any dataset


@dataclass
class SplitPlan:
    split: dict[str, str]  # unit key -> split
    groups: list[list[str]]  # units kept together because they share text (only groups of 2+)
    strata: dict[str, dict[str, int]]  # stratum -> split -> groups
    rubric: set[tuple[str, ...]] = field(default_factory=set)  # 13-grams ignored as the exam's fixed wording


def bank_units(bank: Bank) -> list[Unit]:
    """The bank as split units: every question with a gold answer or a diagram, and every diagram of no question."""
    answers = defaultdict(list)
    for gold in bank.answers:
        answers[gold.question_id].append(gold.text)
    diagrams = defaultdict(list)
    for diagram in bank.diagrams:
        diagrams[diagram.question_id or ""].append(diagram)
    units = []
    known = set()
    for question in bank.questions:
        known.add(question.id)
        if not answers[question.id] and not diagrams[question.id]:
            continue
        mine = diagrams[question.id]
        prompts = [question_text(question), *(d.description for d in mine)]
        units.append(Unit(question.id, question.type, prompts, prompts + answers[question.id] + [d.code for d in mine]))
    for question_id, mine in diagrams.items():
        if question_id in known:
            continue
        for diagram in mine:
            units.append(Unit(f"diagram:{diagram.id}", f"diagram/{diagram.format}", [diagram.description],
                              [diagram.description, diagram.code]))
    return units


def _hash(seed: int, *parts: str) -> str:
    return hashlib.sha256(json.dumps([seed, *parts]).encode()).hexdigest()


def _round(x: float) -> int:
    return math.floor(x + 0.5)  # not round(): banker's rounding would make 6.5 -> 6 but 7.5 -> 8


def rubric_grams(prompt_sets: Iterable[set[tuple[str, ...]]]) -> set[tuple[str, ...]]:
    """13-grams found in the prompts of RUBRIC or more questions: the paper's fixed wording, not a question.

    A-Level planning questions all end "...the procedure to be followed, the
    measurements to be taken, the control of variables...": counted as
    overlap, it would glue every such question into one split and the type
    could never be tested. Copies of a whole question are still caught, by
    their exact hash and as near duplicates.
    """
    seen = Counter(gram for grams in prompt_sets for gram in grams)
    return {gram for gram, count in seen.items() if count >= RUBRIC and len(gram) == NGRAM}


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def group_units(units: list[Unit]) -> tuple[list[list[Unit]], set[tuple[str, ...]]]:
    """Units that must share a split, and the rubric grams that were ignored.

    Two units are joined when a prompt of one (a) is, normalised, one of the
    other's texts, (b) shares a 13-gram that is not rubric (all of the prompt
    when shorter) with any of the other's texts, or (c) nearly duplicates one of
    the other's prompts (Jaccard of word pairs >= NEAR, as `collect` measures it).
    Each text is read once, and near duplicates are found by MinHash, so this
    scales to large banks.
    """
    from .neardup import NearDuplicateIndex

    join = _UnionFind(len(units))
    prompt_grams = [set().union(*(probe_grams(p) for p in unit.prompts)) for unit in units]
    rubric = rubric_grams(prompt_grams)
    wanted = set().union(*prompt_grams) - rubric if units else set()
    lengths = {len(g) for g in wanted} | {NGRAM}
    prompt_owner = {}
    for index, unit in enumerate(units):
        for prompt in unit.prompts:
            join.union(index, prompt_owner.setdefault(text_hash(prompt), index))
    gram_owner: dict[tuple[str, ...], int] = {}
    for index, unit in enumerate(units):
        for text in unit.texts:
            if (owner := prompt_owner.get(text_hash(text))) is not None:
                join.union(index, owner)
            for gram in _grams_of_lengths(text, lengths) & wanted:
                join.union(index, gram_owner.setdefault(gram, index))
    near = NearDuplicateIndex(NEAR)
    for index, unit in enumerate(units):
        for prompt in unit.prompts:
            for duplicate in near.add(str(index), prompt):
                join.union(index, int(duplicate.old_id))
    groups = defaultdict(list)
    for index, unit in enumerate(units):
        groups[join.find(index)].append(unit)
    return list(groups.values()), rubric


def _allocate(sizes: dict[str, int], fraction: float, caps: dict[str, int], seed: int) -> dict[str, int]:
    """Split round(total * fraction) over strata in proportion (largest remainders), within caps."""
    want = min(_round(sum(sizes.values()) * fraction), sum(caps.values()))
    quotas = {s: n * fraction for s, n in sizes.items()}
    take = {s: min(math.floor(q), caps[s]) for s, q in quotas.items()}
    order = sorted(sizes, key=lambda s: (-(quotas[s] - math.floor(quotas[s])), _hash(seed, "stratum", s)))
    while sum(take.values()) < want:
        progress = False
        for stratum in order:
            if sum(take.values()) < want and take[stratum] < caps[stratum]:
                take[stratum] += 1
                progress = True
        if not progress:
            break
    return take


def plan_split(units: list[Unit], settings: TrainConfig) -> SplitPlan:
    """Assign every unit to train, validation or test. See the module docstring for the rules."""
    groups, rubric = group_units(units)
    seed = settings.seed
    # A group takes the stratum of its first member in seed order; groups of a stratum are taken in seed order.
    keyed = []
    for group in groups:
        group.sort(key=lambda u: _hash(seed, u.key))
        keyed.append((group[0].stratum, _hash(seed, group[0].key), group))
    by_stratum: dict[str, list[list[Unit]]] = defaultdict(list)
    for stratum, _, group in sorted(keyed, key=lambda item: item[:2]):
        by_stratum[stratum].append(group)
    sizes = {s: len(g) for s, g in by_stratum.items()}
    held = settings.validation + settings.test
    # Every stratum keeps at least one group in train: a type the model never saw cannot be learnt.
    holdout = _allocate(sizes, held, {s: n - 1 for s, n in sizes.items()}, seed) if held else dict.fromkeys(sizes, 0)
    tests = _allocate(holdout, settings.test / held, holdout, seed) if held else dict.fromkeys(sizes, 0)
    split, strata = {}, {}
    for stratum, stratum_groups in by_stratum.items():
        counts = Counter()
        for index, group in enumerate(stratum_groups):
            name = "test" if index < tests[stratum] else "validation" if index < holdout[stratum] else "train"
            counts[name] += 1
            for unit in group:
                split[unit.key] = name
        strata[stratum] = {name: counts[name] for name in SPLITS}
    return SplitPlan(split, [[u.key for u in g] for g in groups if len(g) > 1], strata, rubric)


# --- the leakage check --------------------------------------------------------------------


@dataclass
class Leakage:
    """What check_leakage found for one held-out split against train: example ids, by kind of match."""

    checked: int
    exact: list[str] = field(default_factory=list)  # the prompt is, normalised, a train prompt or answer
    overlap: list[str] = field(default_factory=list)  # shares a 13-gram (not rubric), or all of a short prompt, with train
    near: list[str] = field(default_factory=list)  # nearly duplicates a train prompt

    @property
    def clean(self) -> bool:
        return not (self.exact or self.overlap or self.near)


def check_leakage(train: list[Example], held_out: list[Example], rubric: set[tuple[str, ...]] | None = None) -> Leakage:
    """Does any held-out prompt appear in train? Exact hashes, 13-gram overlap, near duplicates.

    Train text is every train example's prompt and answer (the system prompt
    and framing are the same for every example, so they are left out).
    `rubric` grams are ignored (see rubric_grams); by default they are
    worked out from the prompts given.
    """
    from .neardup import NearDuplicateIndex

    train_texts = [text for e in train for text in (e.probe, e.messages[-1]["content"]) if text]
    hashes = {text_hash(text) for text in train_texts}
    if rubric is None:
        distinct = {text_hash(e.probe): e.probe for e in [*train, *held_out] if e.probe}
        rubric = rubric_grams(probe_grams(p) for p in distinct.values())
    probes = {e.id: probe_grams(e.probe) - rubric for e in held_out if e.probe}
    wanted = set().union(*probes.values()) if probes else set()
    lengths = {len(g) for g in wanted} | {NGRAM}
    seen: set[tuple[str, ...]] = set()
    for text in train_texts:
        seen |= _grams_of_lengths(text, lengths) & wanted
    near = NearDuplicateIndex(NEAR)
    for example in train:
        if example.probe:
            near.add("train", example.probe)
    report = Leakage(checked=len(held_out))
    for example in held_out:
        if not example.probe:
            continue
        if text_hash(example.probe) in hashes:
            report.exact.append(example.id)
        if probes[example.id] & seen:
            report.overlap.append(example.id)
        if any(d.old_id == "train" for d in near.add("held-out", example.probe)):
            report.near.append(example.id)
    return report


# --- token statistics ---------------------------------------------------------------------


def token_lengths(tokenizer, examples: list[Example]) -> list[tuple[int, int]]:
    """(whole conversation, assistant reply) token counts, through the model's own chat template."""
    if not examples:
        return []
    try:
        full = [tokenizer.apply_chat_template(e.messages, tokenize=False) for e in examples]
        prompts = [tokenizer.apply_chat_template(e.messages[:-1], tokenize=False, add_generation_prompt=True) for e in examples]
    except Exception as err:  # noqa: BLE001 - jinja errors from a model's own template
        raise TutorError(f"the model's chat template cannot render these messages (a system turn, say): {err}") from None
    # The rendered text already holds the template's special tokens; adding more would double them.
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return [(len(f), len(f) - len(p)) for f, p in zip(full_ids, prompt_ids)]


def token_stats(lengths: list[tuple[int, int]], max_length: int) -> dict[str, Any]:
    if not lengths:
        return {"examples": 0, "tokens": 0}
    total = sorted(n for n, _ in lengths)
    reply = sorted(n for _, n in lengths)
    p95 = total[min(len(total) - 1, math.ceil(0.95 * len(total)) - 1)]
    return {"examples": len(total), "tokens": sum(total), "mean": round(statistics.fmean(total), 1), "median": statistics.median(total),
            "p95": p95, "min": total[0], "max": total[-1], "reply_mean": round(statistics.fmean(reply), 1), "reply_max": reply[-1],
            "over_max_length": sum(n > max_length for n in total)}


# --- building ----------------------------------------------------------------------------


@dataclass
class BuiltDataset:
    role: str
    path: Path
    fingerprint: str
    splits: dict[str, list[Example]]
    meta: dict[str, Any]


def build(kit: SubjectKit, bank: Bank, role: str, settings: TrainConfig, *, tokenizer=None, tokenizer_name: str = "",
          user_dirs: Iterable[Path] = (), bank_label: str = "", bank_path: Path | None = None, out: Path | None = None,
          material: Callable[[Question], list] | None = None) -> BuiltDataset:
    """Build one role's dataset from a loaded bank; save it when `out` is given.

    Without a tokenizer the token statistics are left out (the CLI always has one).
    Raises TutorError if the leakage check fails, rather than save a dataset that leaks.
    """
    if role not in ROLES:
        raise UnknownName("dataset role", role, ROLES)
    user_dirs = list(user_dirs)
    examples = answer_examples(kit, bank, user_dirs, material) if role == "answer" else diagram_examples(kit, bank, user_dirs)
    units = bank_units(bank)
    plan = plan_split(units, settings)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for example in examples:
        splits[plan.split[example.unit]].append(example)
    if role == "answer":
        count = identity_count(len(splits["train"]), settings.identity_ratio)
        splits["train"] += identity_examples(kit, count, settings, tutor_system_prompt(kit, user_dirs))
    for name in SPLITS:
        splits[name].sort(key=lambda e: e.id)  # content order: the same bank gives the same files

    leakage = {name: check_leakage(splits["train"], splits[name], plan.rubric) for name in ("validation", "test")}
    if not all(report.clean for report in leakage.values()):
        bad = [f"{name}: {', '.join(sorted(set(r.exact + r.overlap + r.near)))}" for name, r in leakage.items() if not r.clean]
        raise TutorError(f"leakage check failed, nothing saved: held-out examples found in train ({'; '.join(bad)})")

    fingerprint = hashlib.sha256(json.dumps({n: [e.row(kit.name) for e in splits[n]] for n in SPLITS}, sort_keys=True,
                                            ensure_ascii=False).encode()).hexdigest()[:16]
    tokens = None
    if tokenizer is not None:
        tokens = {}
        for name in SPLITS:
            lengths = token_lengths(tokenizer, splits[name])
            tokens[name] = token_stats(lengths, settings.max_length)
            tokens[name]["per_group"] = _per_group_tokens(role, splits[name], lengths)
            tokens[name]["over_max_length_ids"] = [e.id for e, (n, _) in zip(splits[name], lengths) if n > settings.max_length]
    answered = {g.question_id for g in bank.answers}
    meta = {
        "subject": kit.name, "role": role, "fingerprint": fingerprint, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tutor": __version__, "bank": bank_label, "bank_path": str(bank_path) if bank_path else None, "tokenizer": tokenizer_name or None,
        "settings": settings.model_dump(mode="json"),
        "counts": _counts(role, splits),
        "tokens": tokens,
        "leakage": {name: {"checked": r.checked, "exact": r.exact, "overlap": r.overlap, "near": r.near} for name, r in leakage.items()},
        "leakage_rules": {"ngram": NGRAM, "rubric_min_questions": RUBRIC, "near_jaccard": NEAR, "rubric_grams": len(plan.rubric),
                          "rubric_example": " ".join(min(plan.rubric)) if plan.rubric else None},
        "groups": {"kept_together": sum(len(g) for g in plan.groups), "largest": max((len(g) for g in plan.groups), default=1)},
        "skipped": {"questions_without_gold_answer": sum(q.id not in answered for q in bank.questions)},
        "columns": list(_features()),
    }
    built = BuiltDataset(role, out or Path(), fingerprint, splits, meta)
    if out is not None:
        _save(built, kit.name)
    return built


def _group_of(role: str, example: Example) -> str:
    if example.kind == "identity":
        return "identity"
    return example.format if role == "diagram" else example.type


def _counts(role: str, splits: dict[str, list[Example]]) -> dict[str, dict[str, int]]:
    """group (question type, or diagram format for the diagram role) -> split -> examples."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for name, examples in splits.items():
        for example in examples:
            counts[_group_of(role, example)][name] += 1
    return dict(sorted(counts.items(), key=lambda item: (item[0] == "identity", item[0])))


def _per_group_tokens(role: str, examples: list[Example], lengths: list[tuple[int, int]]) -> dict[str, dict[str, float]]:
    grouped = defaultdict(list)
    for example, (total, _) in zip(examples, lengths):
        grouped[_group_of(role, example)].append(total)
    return {g: {"mean": round(statistics.fmean(v), 1), "max": max(v)} for g, v in sorted(grouped.items())}


def _save(built: BuiltDataset, subject: str) -> None:
    """HF datasets + card + meta into a temporary folder, then swapped in: a crash never leaves half a dataset."""
    from datasets import Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    features = _features()
    target = built.path
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        columns = {name: {column: [e.row(subject)[column] for e in built.splits[name]] for column in features} for name in SPLITS}
        bars = is_progress_bar_enabled()
        disable_progress_bar()  # a bar per split for a save that takes milliseconds is noise
        try:
            DatasetDict({name: Dataset.from_dict(columns[name], features=features) for name in SPLITS}).save_to_disk(str(staging))
        finally:
            if bars:
                enable_progress_bar()
        (staging / META).write_text(json.dumps(built.meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (staging / CARD).write_text(card(built), encoding="utf-8")
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --- the card -------------------------------------------------------------------------------


ROLE_TEXT = {
    "answer": "the tutor's system prompt and an exam question as the student sees it (type, parts, options, marks) "
              "-> the gold answer, with its (DIAGRAM: ...) markers",
    "diagram": "the diagram prompt for a (DIAGRAM: ...) description -> the code that draws it, in one ```latex block",
}


def card(built: BuiltDataset) -> str:
    """The dataset card: what a person reads before training on it."""
    meta = built.meta
    subject, role, settings = meta["subject"], meta["role"], meta["settings"]
    group = "format" if role == "diagram" else "type"
    lines = [
        "---",
        f"pretty_name: tutor {subject} {role}",
        f"tags: [tutor, {subject}, {role}]",
        "task_categories: [text-generation]",
        "---",
        f"# {subject}: {role} dataset",
        "",
        f"Built by `tutor --subject {subject} dataset build --role {role}` (tutor {meta['tutor']}) on {meta['created']}, "
        f"from {meta['bank']}.",
        "",
        f"Each example is a chat (`messages`): {ROLE_TEXT[role]}.",
        "",
        f"Fingerprint: `{meta['fingerprint']}` (the content of every split; an adapter records the fingerprint it was trained on).",
        "",
        "## Examples per split",
        "",
        *_md_table([group, *SPLITS, "total"], [
            [name, *(str(c[s]) for s in SPLITS), str(sum(c.values()))] for name, c in meta["counts"].items()
        ] + [["**total**", *(f"**{len(built.splits[s])}**" for s in SPLITS), f"**{sum(len(v) for v in built.splits.values())}**"]]),
        "",
        f"The split is deterministic (seed {settings['seed']}) and stratified by question type: about "
        f"{settings['validation']:.0%} validation and {settings['test']:.0%} test within every type, by largest remainders; "
        "a type with a single question stays in train. "
        + ("Both roles share it, so a test question's diagrams are test diagrams too."
           if role == "answer" else
           "Diagrams follow the split of the question whose gold answer asked for them (the answer role's split), so a test "
           "question's diagrams are test diagrams; diagrams of no question are stratified by format."),
    ]
    if meta["groups"]["kept_together"]:
        lines += ["", f"{meta['groups']['kept_together']} questions (or diagrams) share text with another and were kept in one split, "
                      f"so that none is tested on what another trained (largest group: {meta['groups']['largest']})."]
    if role == "answer":
        identity = sum(meta["counts"].get("identity", {}).values())
        train = len(built.splits["train"])
        lines += ["", f"Identity examples (\"who are you\", \"who made you\", written for {subject}): {identity} of {train} train examples "
                      f"({identity / train if train else 0:.1%}; asked for: {settings['identity_ratio']:.1%}), in train only."]
    if skipped := meta["skipped"]["questions_without_gold_answer"]:
        lines += ["", f"{skipped} questions of the bank have no gold answer yet and are not in the dataset (`tutor teach` writes them)."]
    lines += ["", "## Tokens", ""]
    if meta["tokens"]:
        lines += [f"Counted with the tokenizer and chat template of `{meta['tokenizer']}`; \"reply\" is the assistant turn, "
                  f"the part the loss is taken on. Longer than max_length ({settings['max_length']}) would be truncated in training.", ""]
        stats = ("mean", "median", "p95", "max", "reply_mean", "reply_max", "over_max_length")
        headers = ["split", "examples", "tokens", "mean", "median", "p95", "max", "reply mean", "reply max", f"> {settings['max_length']}"]
        lines += _md_table(headers, [[s, str(t["examples"]), str(t["tokens"]), *(_number(t.get(k)) for k in stats)]
                                     for s, t in meta["tokens"].items()])
        if too_long := [i for t in meta["tokens"].values() for i in t.get("over_max_length_ids", [])]:
            lines += ["", f"Longer than max_length: {', '.join(f'`{i}`' for i in too_long)}."]
        groups = sorted({g for t in meta["tokens"].values() for g in t.get("per_group", {})})
        lines += ["", f"Mean (max) tokens per example, by {group}:", ""]
        lines += _md_table([group, *SPLITS], [
            [g, *(_mean_max(meta["tokens"][s].get("per_group", {}).get(g)) for s in SPLITS)] for g in groups
        ])
    else:
        lines += ["Not counted (built without a tokenizer)."]
    lines += ["", "## Leakage check", ""]
    leak = meta["leakage"]
    rules = meta["leakage_rules"]
    lines += [f"**Passed**: no validation or test prompt appears in train. Each held-out prompt (the question text, or the diagram "
              "description) was compared with every train example's prompt and answer: an exact match after normalising case, "
              f"punctuation and spacing (sha256); any shared run of {NGRAM} words (all of the prompt when it is shorter); and a near "
              f"duplicate of a train prompt (Jaccard similarity of word pairs of {NEAR} or more).", ""]
    lines += _md_table(["split", "checked", "exact matches", f"{NGRAM}-gram overlaps", "near duplicates"], [
        [s, str(r["checked"]), str(len(r["exact"])), str(len(r["overlap"])), str(len(r["near"]))] for s, r in leak.items()
    ])
    if rules["rubric_grams"]:
        lines += ["", f"{rules['rubric_grams']} {NGRAM}-grams found in the prompts of {RUBRIC} or more questions were taken as the exam's "
                      f"fixed wording, not as overlap (e.g. \"{rules['rubric_example']}\")."]
    example = next(iter(built.splits["test"] or built.splits["train"]), None)
    if example:
        lines += ["", "## An example", ""]
        for message in example.messages:
            text = message["content"]
            text = text if len(text) <= 1500 else text[:1500] + " [...]"
            lines += [f"**{message['role']}**", "", "````text", text, "````", ""]
    lines += ["", "## Loading", "", "```python", "from datasets import load_from_disk", "", f"splits = load_from_disk(\"{built.path}\")",
              "splits[\"train\"][0][\"messages\"]", "```", ""]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _mean_max(values: dict | None) -> str:
    return f"{values['mean']:.0f} ({values['max']})" if values else "-"


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


# --- the workspace side -------------------------------------------------------------------


def dataset_dir(workspace: Workspace, subject: str, role: str) -> Path:
    return workspace.dataset_dir(subject, role)


def choose_bank(kit: SubjectKit, workspace: Workspace, path: Path | None = None) -> tuple[Bank, str, Path]:
    """The bank to build from, how to describe it, and where it is.

    A given path wins; else the workspace bank if it has gold answers; else the
    subject's bundled sample bank.
    """
    from .bank import QUESTIONS, load_bank

    if path is not None:
        return load_bank(kit, path), f"`{path}`", Path(path).resolve()
    own = workspace.bank_dir(kit.name)
    if (own / QUESTIONS).exists():
        bank = load_bank(kit, own)
        if bank.answers:
            return bank, f"the workspace bank `{own}`", own.resolve()
        why = "the workspace bank has no gold answers yet"
    else:
        why = "the workspace has no bank"
    if kit.subject.bank is None:
        raise TutorError(f"{why}, and subject {kit.name!r} ships no sample bank: give --bank PATH")
    return load_bank(kit, kit.subject.bank), f"the bundled sample bank of {kit.distribution} ({why})", Path(kit.subject.bank).resolve()


def build_roles(kit: SubjectKit, workspace: Workspace, roles: Iterable[str], settings: TrainConfig, *, base: str,
                bank_path: Path | None = None, required: bool = False, say: Callable[[str], None] = print,
                material: Callable[[Question], list] | None = None) -> list[BuiltDataset]:
    """Build each role's dataset from the bank (choose_bank) into the workspace; what `dataset build` and `tutor run` do.

    A role whose material the bank lacks (no gold answers, no diagrams) is an error when `required`,
    else skipped with one line; none left to build is an error either way. `material` (kb.retriever) gives each
    question's knowledge-base chunks when [train] rag is on.
    """
    from .basemodels import load_tokenizer, resolve

    bank, label, where = choose_bank(kit, workspace, bank_path)
    say(f"bank: {label.replace('`', '')}: {len(bank.questions)} questions, {len(bank.answers)} gold answers, "
        f"{len(bank.diagrams)} diagrams")
    wanted = list(roles)
    for role, has, what in (("answer", bank.answers, "gold answers (tutor teach writes them)"), ("diagram", bank.diagrams, "diagrams")):
        if role in wanted and not has:
            if required:
                raise TutorError(f"the bank has no {what}: nothing to build the {role} dataset from")
            say(f"{role}: skipped, the bank has no {what}")
            wanted.remove(role)
    if not wanted:
        raise TutorError("nothing to build")
    if settings.rag and material is None:
        raise TutorError("[train] rag = true: give build_roles the knowledge base's retriever (kb.retriever)")
    tokenizer = load_tokenizer(base, say=say)
    return [build(kit, bank, role, settings, tokenizer=tokenizer, tokenizer_name=resolve(base, materialise=False).name,
                  user_dirs=workspace.template_dirs(kit.name), bank_label=label, bank_path=where,
                  out=dataset_dir(workspace, kit.name, role), material=material) for role in wanted]



def load(workspace: Workspace, subject: str, role: str, path: Path | None = None):
    """A built dataset and its meta, refusing one built for another subject or role.

    The training stage uses this: physics must not be taught from economics' data.
    `path` is a dataset folder elsewhere; by default the workspace's.
    """
    from datasets import load_from_disk

    path = Path(path) if path else dataset_dir(workspace, subject, role)
    if not (path / META).is_file():
        if path != dataset_dir(workspace, subject, role):
            raise TutorError(f"{path}: not a dataset built by tutor (no {META})")
        raise TutorError(f"no {role} dataset for {subject} at {path}: run `tutor --subject {subject} dataset build --role {role}`")
    meta = runs.read_meta(path, META)
    runs.check_bound(meta, subject, role, f"the dataset {path}", f"train {subject} on it")
    return load_from_disk(str(path)), meta


def summary_rows(built: BuiltDataset) -> list[tuple[str, ...]]:
    """Rows for the CLI: split, examples, identity, mean and max tokens."""
    rows = []
    for name in SPLITS:
        examples = built.splits[name]
        tokens = (built.meta["tokens"] or {}).get(name, {})
        identity = sum(e.kind == "identity" for e in examples)
        rows.append((name, str(len(examples)), str(identity), str(tokens.get("mean", "-")), str(tokens.get("max", "-"))))
    return rows


def too_long_line(built: BuiltDataset, shown: int = 3) -> str | None:
    """One warning line for the examples longer than max_length, counted, with the first few ids; None when there are none.

    Training cuts such an example at max_length, so the end of its answer is never learnt
    (and one whose prompt alone is too long is dropped).
    """
    tokens = built.meta["tokens"] or {}
    ids = [i for name in SPLITS for i in tokens.get(name, {}).get("over_max_length_ids", [])]
    if not ids:
        return None
    total = sum(len(examples) for examples in built.splits.values())
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return (f"{len(ids)} of {total} {built.role} examples are longer than max_length = {built.meta['settings']['max_length']} tokens "
            f"and will be cut in training: {', '.join(ids[:shown])}{more} (raise [train] max_length; the card lists them all)")


def leakage_line(built: BuiltDataset) -> str:
    leak = built.meta["leakage"].values()
    found = [sum(len(r[kind]) for r in leak) for kind in ("exact", "overlap", "near")]
    verdict = "passed" if not any(found) else "FAILED"
    return (f"leakage check {verdict}: {sum(r['checked'] for r in leak)} held-out prompts against {len(built.splits['train'])} "
            f"train examples, {found[0]} exact matches, {found[1]} {NGRAM}-gram overlaps, {found[2]} near duplicates")
