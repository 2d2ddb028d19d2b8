"""The three-way text merge: deterministic, in code points, nothing lost on overlap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncline.textmerge import diff_hunks, merge3

texts = st.text(alphabet="ab c\n🎉é", max_size=30)


def apply_hunks(base: str, hunks: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, end, text in hunks:
        out += [base[pos:start], text]
        pos = end
    return "".join([*out, base[pos:]])


def test_edits_in_different_places_both_apply() -> None:
    base = "The quick fox jumps."
    mine = "The quick brown fox jumps."
    theirs = "The quick fox jumps high."
    assert merge3(base, mine, theirs) == "The quick brown fox jumps high."


def test_emoji_count_as_one_unit() -> None:
    base = "I 🎉 you"
    assert merge3(base, "I 🎉🎉 you", "I 🎉 you!") == "I 🎉🎉 you!"
    assert diff_hunks("a🎉b", "a🎉cb") == [(2, 2, "c")]


def test_overlapping_edits_keep_both_theirs_first() -> None:
    # Both replaced the same word: the region becomes theirs' text then mine.
    assert merge3("the cat sat", "the cow sat", "the dog sat") == "the dogcow sat"


def test_the_same_edit_on_both_sides_applies_once() -> None:
    assert merge3("hello", "hello world", "hello world") == "hello world"
    assert merge3("abc", "aXc", "aXc") == "aXc"


def test_inserts_at_the_same_point_keep_both() -> None:
    assert merge3("ab", "aMb", "aTb") == "aTMb"


def test_a_deletion_and_an_insert_elsewhere() -> None:
    assert merge3("one two three", "one three", "one two three four") == "one three four"


@given(texts, texts)
def test_diff_hunks_rebuild_the_new_text(base: str, new: str) -> None:
    assert apply_hunks(base, diff_hunks(base, new)) == new


@given(texts, texts)
def test_merge_with_an_unchanged_side_takes_the_other(base: str, other: str) -> None:
    assert merge3(base, other, base) == other
    assert merge3(base, base, other) == other


@given(texts, texts, texts)
def test_merge_is_deterministic(base: str, mine: str, theirs: str) -> None:
    assert merge3(base, mine, theirs) == merge3(base, mine, theirs)


# Edits that cannot be read two ways: text added before or after the "|" fences, never
# ending or starting with a fence itself (inserting "|" next to "|" is ambiguous: the
# diff may place it on either side, and both readings are correct merges).
edge = st.text(max_size=20).filter(lambda t: "|" not in t)


@given(st.text(max_size=20), edge, edge)
def test_prefix_and_suffix_edits_both_survive(core: str, head: str, tail: str) -> None:
    base = "|" + core + "|"
    merged = merge3(base, head + base, base + tail)
    assert merged == head + base + tail


def test_an_ambiguous_insert_keeps_both_edits() -> None:
    # "|" added to "||" at the start reads as an insert at the end, beside theirs "0".
    assert merge3("||", "|||", "||0") == "||0|"
