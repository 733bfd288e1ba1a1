"""The shared subject-plugin contract, run against tutor-physics."""

from tutor.testing import SubjectPluginContract


class TestPhysicsPlugin(SubjectPluginContract):
    subject = "physics"
    distribution = "tutor-physics"
    min_questions = 60
    min_per_type = 4
    min_per_topic = 4
    min_diagrams = 15
