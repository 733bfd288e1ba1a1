"""Adapter runs: the roles an adapter can have, and (as the stages grow) the run layout and lookup.

Kept free of heavy imports: the CLI reads ROLES to build its options.
"""

from __future__ import annotations

# One LoRA adapter per subject and role: `answer` is the tutor (question -> mark-scheme answer),
# `diagram` turns a DIAGRAM description into diagram code.
ROLES = ("answer", "diagram")
