"""The contract every subject plugin must meet, as a pytest class to inherit.

    from tutor.testing import SubjectPluginContract

    class TestPhysics(SubjectPluginContract):
        subject = "physics"
        distribution = "tutor-physics"

pytest then runs every check below against the installed plugin. Subject
owners add their own tests beside it; the contract is the same for all.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import distribution as installed_distribution

from click.testing import CliRunner

from .bank import Bank, bank_stats, load_bank
from .cli import cli
from .prompts import KINDS, question_context, render
from .registry import SubjectKit, get_subject, registry


class SubjectPluginContract:
    subject: str = ""
    distribution: str = ""
    min_questions = 8  # the foundation's starter bank; a full sample bank raises these
    min_per_type = 1
    min_per_topic = 1
    min_diagrams = 3

    def kit(self) -> SubjectKit:
        return get_subject(self.subject)

    def bank(self) -> Bank:
        kit = self.kit()
        return load_bank(kit, kit.subject.bank, require_answers=True)

    def test_installed_and_discovered(self):
        installed_distribution(self.distribution)  # raises if not pip-installed
        assert self.kit().distribution == self.distribution
        result = CliRunner().invoke(cli, ["subjects"])
        assert result.exit_code == 0, result.output
        assert self.subject in result.output.split()

    def test_bank_validates(self):
        result = CliRunner().invoke(cli, ["--subject", self.subject, "bank", "validate"])
        assert result.exit_code == 0, result.output
        bank = self.bank()
        assert len(bank.questions) >= self.min_questions
        assert len(bank.diagrams) >= self.min_diagrams

    def test_bank_spreads_over_types_and_topics(self):
        stats = bank_stats(self.kit(), self.bank())
        thin_types = {t: n for t, n in stats.per_type.items() if n < self.min_per_type}
        assert not thin_types, f"types with fewer than {self.min_per_type} questions: {thin_types}"
        thin_topics = {t: n for t, n in stats.per_topic.items() if n < self.min_per_topic}
        assert not thin_topics, f"topics with fewer than {self.min_per_topic} questions: {thin_topics}"

    def test_mcq_keys_are_balanced(self):
        keys = bank_stats(self.kit(), self.bank()).mcq_keys
        if sum(keys.values()) >= 4:
            assert max(keys.values()) - min(keys.values()) <= max(2, sum(keys.values()) // 10), f"unbalanced MCQ keys: {keys}"

    def test_every_type_has_guide_and_exemplar(self):
        kit = self.kit()
        assert kit.types, "the subject registers no question types"
        for qtype in kit.types.values():
            assert len(qtype.guide.split()) >= 40, f"{qtype.id}: the guide is too short to teach anything"
            assert qtype.exemplars and all(e.answer.strip() for e in qtype.exemplars), qtype.id
            for fmt in qtype.diagram_formats:
                kit.format(fmt)  # raises UnknownName for an unregistered format

    def test_subject_diagram_formats_are_registered(self):
        formats = registry().formats
        for name in self.kit().subject.diagram_formats:
            assert name in formats, f"{name} is not a registered diagram format"

    def test_bank_diagrams_pass_static_checks(self):
        kit = self.kit()
        for diagram in self.bank().diagrams:
            assert kit.format(diagram.format).check(diagram.code) == [], diagram.description

    def test_every_template_renders_for_every_type(self):
        kit, bank = self.kit(), self.bank()
        for type_id in kit.types:
            question = next(q for q in bank.questions if q.type == type_id)
            gold = bank.answers_to(question.id)[0]
            context = question_context(kit, question, gold, student_answer=gold.text, topic=question.topic, examples=bank.questions[:3])
            context |= {"description": "A labelled diagram.", "format": kit.format(kit.subject.diagram_formats[0])}
            for kind in KINDS:
                messages = render(kit, kind, **context)
                assert [m["role"] for m in messages] == ["system", "user"], (type_id, kind)
                expected = {"set": kit.types[type_id].name, "diagram": context["description"]}.get(kind, question.stem.strip()[:40])
                assert expected in messages[1]["content"], (type_id, kind)


def check_calculations(subject: str, recompute: dict[str, dict[str | None, Callable[[], float]]]) -> int:
    """Recompute every final answer of a subject's sample bank; return how many were checked.

    `recompute` maps a question id to {FinalAnswer.key ('b', 'b:p(H2)', or
    None for a one-part question): a function computing the answer from the
    question's data}.
    Each result must agree with the recorded final answer to its significant
    figures, and that value must appear in the gold answer (with its unit) and
    in the mark scheme.
    """
    from .default_plugins.evaluators import agrees, numbers_in, numbers_with_spans

    kit = get_subject(subject)
    bank = load_bank(kit, kit.subject.bank, require_answers=True)
    with_answers = {q.id: q for q in bank.questions if q.final_answers}
    assert set(recompute) <= set(with_answers), f"not questions with final answers: {sorted(set(recompute) - set(with_answers))}"
    assert set(with_answers) <= set(recompute), f"final answers nobody recomputes: {sorted(set(with_answers) - set(recompute))}"
    checked = 0
    for qid, question in with_answers.items():
        gold = bank.answers_to(qid)[0].text
        expected = {f.key for f in question.final_answers}
        assert expected == set(recompute[qid]), f"{qid}: recompute {sorted(expected, key=str)}, not {sorted(recompute[qid], key=str)}"
        for final in question.final_answers:
            where = f"{qid} [{final.key}]" if final.key else qid
            computed = recompute[qid][final.key]()
            assert agrees(computed, final.value, final.sig_figs), \
                f"{where}: recomputed {computed:.6g}, recorded {final.value:g} to {final.sig_figs} s.f."
            written = [(start, end) for n, start, end in numbers_with_spans(gold) if agrees(n, final.value, final.sig_figs)]
            assert written, f"{where}: {final.value:g} is not in the gold answer"
            assert any(_unit_beside(gold, start, end, final.unit) for start, end in written), \
                f"{where}: {final.value:g} is never written with its unit {final.unit!r} in the gold answer"
            # Marking points only (notes may quote wrong answers as common errors),
            # unless the part is marked by levels: then its descriptors and notes.
            ms = question.mark_scheme
            levelled = [lv.descriptor for lv in ms.levels if lv.part == final.part]
            scheme = " ".join(levelled + [ms.notes]) if levelled else " ".join(p.text for p in ms.points if p.part in (final.part, None))
            assert any(agrees(n, final.value, final.sig_figs) for n in numbers_in(scheme)), \
                f"{where}: {final.value:g} is not in the mark scheme's points"
            checked += 1
    return checked


def _unit_beside(text: str, start: int, end: int, unit: str) -> bool:
    """Is `unit` written with the number at text[start:end]? After it ("15.1 cm"),
    currency before it ("$2400", "$400 million"), or heading its table column
    ("f / cm" earlier in the same block of lines, with no blank line between)."""
    if not unit:
        return True
    squeeze = lambda s: s.replace(" ", "")  # noqa: E731
    prefix, _, rest = unit.partition(" ") if unit[0] in "$£€¥" else ("", "", unit)
    before = not prefix or squeeze(text[max(0, start - 3):start]).endswith(prefix)
    after = not rest or squeeze(text[end:end + 3 * len(rest) + 3]).startswith(squeeze(rest))
    block = text[:start].rsplit("\n\n", 1)[-1]
    return (before and after) or f"/{squeeze(unit)}" in squeeze(block)
