"""The shared subject-plugin contract, run against tutor-economics."""

from tutor.testing import SubjectPluginContract


class TestEconomicsPlugin(SubjectPluginContract):
    subject = "economics"
    distribution = "tutor-economics"
    min_questions = 60
    min_per_type = 4
    min_per_topic = 4
    min_diagrams = 15
