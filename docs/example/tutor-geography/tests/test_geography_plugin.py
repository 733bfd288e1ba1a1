"""The shared subject-plugin contract, run against tutor-geography."""

from tutor.testing import SubjectPluginContract


class TestGeographyPlugin(SubjectPluginContract):
    subject = "geography"
    distribution = "tutor-geography"
    min_questions = 2  # grow the bank, then raise these
    min_diagrams = 1
