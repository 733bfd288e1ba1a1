"""The contract every subject plugin must meet, as a pytest class to inherit.

    from tutor.testing import SubjectPluginContract

    class TestPhysics(SubjectPluginContract):
        subject = "physics"
        distribution = "tutor-physics"

pytest then runs every check below against the installed plugin. Subject
owners add their own tests beside it; the contract is the same for all.
"""

from __future__ import annotations

from importlib.metadata import distribution as installed_distribution

from click.testing import CliRunner

from .bank import Bank, load_bank
from .cli import cli
from .prompts import KINDS, question_context, render
from .registry import SubjectKit, get_subject, registry


class SubjectPluginContract:
    subject: str = ""
    distribution: str = ""
    min_questions = 8  # the foundation's starter bank; the sample-bank issue raises it
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

    def test_bank_covers_every_type(self):
        bank_types = {q.type for q in self.bank().questions}
        missing = sorted(set(self.kit().types) - bank_types)
        assert not missing, f"types with no sample question: {missing}"

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
