"""The shared subject-plugin contract, run against tutor-chemistry."""

from tutor.testing import SubjectPluginContract


class TestChemistryPlugin(SubjectPluginContract):
    subject = "chemistry"
    distribution = "tutor-chemistry"
