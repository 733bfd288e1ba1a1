"""The `(DIAGRAM: description)` marker: the one parser the whole project uses.

A tutor model cannot draw, so wherever a picture belongs it writes
`(DIAGRAM: Supply and demand diagram with S shifting left from S1 to S2 (a tax))`.
Descriptions routinely contain parentheses of their own, so a regular
expression up to the first `)` is wrong; we scan and balance brackets instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Tolerate what models actually write: any case, spaces inside the bracket.
_OPEN = re.compile(r"\(\s*DIAGRAM\s*:", re.IGNORECASE)


class MarkerError(ValueError):
    """A marker that is opened but never closed, or has no description."""


@dataclass(frozen=True)
class DiagramMarker:
    description: str
    start: int  # offset of "(" in the text
    end: int  # offset just past the closing ")"

    def line(self, text: str) -> int:
        return text.count("\n", 0, self.start) + 1


def find_diagrams(text: str) -> list[DiagramMarker]:
    """Every marker in `text`, in order. Raises MarkerError on a malformed one."""
    found: list[DiagramMarker] = []
    pos = 0
    while match := _OPEN.search(text, pos):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        line = text.count("\n", 0, match.start()) + 1
        if depth:
            raise MarkerError(f"line {line}: '(DIAGRAM:' is never closed")
        description = " ".join(text[match.end() : i - 1].split())
        if not description:
            raise MarkerError(f"line {line}: '(DIAGRAM:' has an empty description")
        found.append(DiagramMarker(description, match.start(), i))
        pos = i
    return found


def replace_diagrams(text: str, replace) -> str:
    """`text` with each marker replaced by `replace(marker)` (e.g. a rendered image link)."""
    out, pos = [], 0
    for marker in find_diagrams(text):
        out += [text[pos : marker.start], replace(marker)]
        pos = marker.end
    return "".join(out) + text[pos:]
