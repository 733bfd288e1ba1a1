"""The shared subject-plugin contract, run against tutor-economics."""

from tutor.testing import SubjectPluginContract


class TestEconomicsPlugin(SubjectPluginContract):
    subject = "economics"
    distribution = "tutor-economics"
