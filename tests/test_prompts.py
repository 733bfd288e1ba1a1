import re

import pytest
from tutor.bank import load_bank
from tutor.errors import TutorError
from tutor.prompts import KINDS, core_templates_dir, question_context, render


@pytest.fixture
def context(toy):
    bank = load_bank(toy, toy.subject.bank)
    question = bank.questions[1]
    return question_context(toy, question, bank.answers_to(question.id)[0])


def test_core_templates_ship_for_every_kind():
    for kind in ["answer", "explain", "set", "mark", "diagram"]:
        assert (core_templates_dir() / kind / "system.j2").is_file()
        assert (core_templates_dir() / kind / "user.j2").is_file()


def test_lookup_order_user_then_subject_then_core(toy, context, tmp_path):
    # The toy overrides _tutor.j2; the core's version is not used.
    system = render(toy, "answer", **context)[0]["content"]
    assert system.startswith("You are an expert Toy teacher and examiner. You answer")
    # A user folder beats the subject; a piece the user does not override still comes from the core.
    (tmp_path / "_tutor.j2").write_text("USER TUTOR for {{ subject.title }}")
    (tmp_path / "_diagram_example.j2").write_text("(DIAGRAM: user example)")
    messages = render(toy, "answer", [tmp_path], **context)
    assert messages[0]["content"].startswith("USER TUTOR for Toy")
    assert "(DIAGRAM: user example)" in messages[1]["content"]
    assert "## Mark scheme: the answer must earn every mark" in messages[1]["content"]


def test_an_override_can_extend_the_core_template_and_replace_one_block(toy, context, tmp_path):
    (tmp_path / "answer").mkdir()
    (tmp_path / "answer" / "user.j2").write_text(
        '{% extends "core/answer/user.j2" %}\n{% block rules %}\n{{ super() }}\n- Extra rule.\n{% endblock %}'  # as the guide shows
    )
    (tmp_path / "answer" / "system.j2").write_text('{% include "core/answer/system.j2" %}\nExtra line.')
    messages = render(toy, "answer", [tmp_path], **context)
    plain = render(toy, "answer", **context)
    assert messages[0]["content"].endswith("Extra line.")
    assert messages[1]["content"] == plain[1]["content"] + "\n- Extra rule."


def test_a_shared_template_folder_beats_the_core_but_not_the_subject(toy, context, tmp_path):
    from tutor import hookimpl
    from tutor.plugins import plugin_manager
    from tutor.registry import registry

    (tmp_path / "_tutor.j2").write_text("SHARED TUTOR")
    (tmp_path / "_diagram_example.j2").write_text("(DIAGRAM: shared example)")

    class SharedTemplates:
        @hookimpl
        def register_prompt_templates(register):
            register(tmp_path)

    plugin_manager().register(SharedTemplates, name="shared-templates")
    registry.cache_clear()
    try:
        messages = render(toy, "answer", **context)
    finally:
        plugin_manager().unregister(name="shared-templates")
        registry.cache_clear()
    assert messages[0]["content"].startswith("You are an expert Toy teacher")  # the subject's own piece wins
    assert "(DIAGRAM: shared example)" in messages[1]["content"]  # the shared piece beats the core's


def test_a_missing_variable_is_an_error_not_an_empty_string(toy, context):
    with pytest.raises(TutorError, match=r"prompt \S*mark/user.j2:\d+: 'student_answer' is undefined"):
        render(toy, "mark", **context)


def test_a_broken_user_template_names_its_file_and_line(toy, context, tmp_path):
    (tmp_path / "_tutor.j2").write_text("fine\n{% if %}")
    with pytest.raises(TutorError, match=r"_tutor.j2:2: "):
        render(toy, "answer", [tmp_path], **context)


def test_answer_prompt_carries_scheme_exemplar_guide_and_diagram_rule(toy, context):
    user = render(toy, "answer", **context)[1]["content"]
    qtype = context["type"]
    for piece in [qtype.guide.strip()[:60], qtype.exemplars[0].answer.strip()[:40], "(a) State what a marking point is. [1]",
                  "- (a) a creditable statement that earns a mark [1]", "Examiner notes: (b) max 2.", "You cannot draw."]:
        assert piece in user


# Lines that start a list item, in Markdown's two kinds.
_ITEM = re.compile(r"^(?:[-*]|\d+\.) ")


def layout_faults(text: str) -> list[str]:
    """Stray blank lines: two in a row, or one between two items of a list (or an item's indented continuation and the next)."""
    faults = ["two blank lines in a row"] if "\n\n\n" in text else []
    lines = text.split("\n")
    for before, blank, after in zip(lines, lines[1:], lines[2:]):
        if not blank.strip() and _ITEM.match(after) and (_ITEM.match(before) or before.startswith("  ")):
            faults.append(f"a blank line inside a list, before {after[:50]!r}")
    return faults


def test_no_rendered_prompt_has_a_stray_blank_line(toy):
    """Every kind, for every question of every subject's bank, through the subject's own templates too."""
    from tutor.models import GoldAnswer
    from tutor.registry import get_subject, registry

    checked = 0
    for name in sorted(registry().subjects):
        kit = get_subject(name)
        bank = load_bank(kit, kit.subject.bank)
        for question in bank.questions:
            # A one-line answer: a bank answer's own paragraphs are content, not the template's layout.
            gold = GoldAnswer(question_id=question.id, text="A short answer.", author="test")
            context = question_context(kit, question, gold, student_answer=gold.text, topic=question.topic, examples=bank.questions[:3])
            context |= {"description": "A labelled diagram.", "format": kit.format((kit.subject.diagram_formats or ["tikz"])[0])}
            for kind in KINDS:
                for message in render(kit, kind, **context):
                    assert layout_faults(message["content"]) == [], (name, question.type, kind, message["role"])
                    checked += 1
    assert checked > 1000


def test_the_layout_check_sees_what_it_looks_for():
    assert layout_faults("## Rules\n- one\n\n- two") == ["a blank line inside a list, before '- two'"]
    assert layout_faults("1. one\n  more of one\n\n2. two") == ["a blank line inside a list, before '2. two'"]
    assert layout_faults("text\n\n\n## Next") == ["two blank lines in a row"]
    assert layout_faults("- last item\n\n## Next\n- first item") == []
