import pytest
from tutor.markers import MarkerError, find_diagrams, replace_diagrams


def test_several_markers_with_parentheses_inside():
    text = (
        "Price rises.\n(DIAGRAM: Supply shifts left from S1 to S2 (a tax), price rises (P1 to P2).)\n"
        "Then (diagram: AD/AS with AD shifting right) follows."
    )
    found = find_diagrams(text)
    assert [m.description for m in found] == [
        "Supply shifts left from S1 to S2 (a tax), price rises (P1 to P2).",
        "AD/AS with AD shifting right",
    ]
    assert text[found[0].start : found[0].end].startswith("(DIAGRAM:")
    assert found[0].line(text) == 2 and found[1].line(text) == 3


def test_no_marker_and_ordinary_parentheses():
    assert find_diagrams("A force (in newtons) acts (see part a).") == []


def test_whitespace_in_description_is_normalised():
    assert find_diagrams("( DIAGRAM :  a\n   circuit )")[0].description == "a circuit"


@pytest.mark.parametrize("bad, message", [
    ("ok\n(DIAGRAM: never closed (really", "line 2: '(DIAGRAM:' is never closed"),
    ("(DIAGRAM:   )", "empty description"),
])
def test_malformed_markers_name_the_line(bad, message):
    with pytest.raises(MarkerError, match=message.replace("(", r"\(")):
        find_diagrams(bad)


def test_replace_diagrams_keeps_the_surrounding_text():
    text = "Before (DIAGRAM: one (1)) middle (DIAGRAM: two) after"
    assert replace_diagrams(text, lambda m: f"[{m.description}]") == "Before [one (1)] middle [two] after"
