"""The shared subject-plugin contract, run against tutor-physics."""

from tutor.testing import SubjectPluginContract


class TestPhysicsPlugin(SubjectPluginContract):
    subject = "physics"
    distribution = "tutor-physics"
