"""The shared subject-plugin contract, run against tutor-chemistry."""

from tutor.testing import SubjectPluginContract


class TestChemistryPlugin(SubjectPluginContract):
    subject = "chemistry"
    distribution = "tutor-chemistry"
    min_questions = 60
    min_per_type = 4
    min_per_topic = 4
    min_diagrams = 15
