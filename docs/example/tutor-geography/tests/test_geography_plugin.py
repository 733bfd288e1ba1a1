"""tutor-geography: the shared subject-plugin contract, plus tests of what only this plugin adds."""

import json

from click.testing import CliRunner
from tutor import get_subject
from tutor.bank import load_bank
from tutor.cli import cli
from tutor.registry import registry
from tutor.testing import SubjectPluginContract


class TestGeographyPlugin(SubjectPluginContract):
    subject = "geography"
    distribution = "tutor-geography"
    min_questions = 7  # what the sample bank holds: raise these as it grows
    min_diagrams = 3
    min_per_topic = 0  # a tutorial-sized bank cannot cover all nine topics yet


def bank():
    kit = get_subject("geography")
    return load_bank(kit, kit.subject.bank)


# --- the evaluator ------------------------------------------------------------------


def case_study_evaluator():
    return registry().evaluators["geography-case-study"]


def test_evaluator_is_registered_for_essays_by_this_plugin():
    evaluator = case_study_evaluator()
    assert evaluator.formats == ["essay"]
    assert registry().owner["evaluator", "geography-case-study"] == "geography"


def test_every_case_study_gold_answer_has_a_place_and_a_statistic():
    loaded = bank()
    case_studies = [q for q in loaded.questions if q.type == "igcse-7"]
    assert case_studies
    for question in case_studies:
        score = case_study_evaluator().score(question, loaded.answers_to(question.id)[0].text)
        assert score.marks == score.out_of == 2, score.feedback


def test_a_generic_answer_scores_nothing_and_says_what_is_missing():
    question = next(q for q in bank().questions if q.type == "igcse-7")
    generic = "Many people died because buildings were badly built. In LEDCs there is little money, so in January aid was slow."
    score = case_study_evaluator().score(question, generic)
    assert score.marks == 0 and score.out_of == 2
    assert "no named place" in score.feedback and "no statistic" in score.feedback


def test_place_and_statistic_are_found_separately():
    question = next(q for q in bank().questions if q.type == "igcse-7")
    score = case_study_evaluator().score
    assert score(question, "The slum of Dharavi is very crowded.").feedback.startswith("named places: Dharavi; no statistic")
    only_number = score(question, "About 1.5 million people were made homeless.")
    assert only_number.marks == 1 and "statistics: 1.5 million" in only_number.feedback
    # A date is not a statistic, and a month is not a place.
    assert score(question, "It happened in March 2011 on a Friday.").marks == 0


# --- the command --------------------------------------------------------------------


def test_geography_topics_lists_every_topic_with_its_question_count():
    result = CliRunner().invoke(cli, ["geography-topics"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["topic", "questions", "types"]
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines[1:-1]}
    assert list(rows) == get_subject("geography").subject.topics  # syllabus order, empty topics included
    assert rows["population"] == ["2", "igcse-4 x1, igcse-mcq x1"]
    assert rows["migration"] == ["0"]
    assert lines[-1] == "7 questions in 6 of 9 topics"


def test_geography_topics_reads_another_bank_and_reports_its_problems(tmp_path):
    source = get_subject("geography").subject.bank / "questions.jsonl"
    first = json.loads(source.read_text(encoding="utf-8").splitlines()[0])
    (tmp_path / "questions.jsonl").write_text(json.dumps(first) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["geography-topics", "--bank", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "1 question in 1 of 9 topics"

    first["topic"] = "volcanoes"
    (tmp_path / "questions.jsonl").write_text(json.dumps(first) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["geography-topics", "--bank", str(tmp_path)])
    assert result.exit_code == 1
    assert "topic: unknown topic 'volcanoes'; valid: population, migration" in result.output


def test_geography_topics_is_listed_in_tutor_help():
    result = CliRunner().invoke(cli, ["--help"])
    assert "geography-topics" in result.output
