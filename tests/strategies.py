"""Hypothesis strategies shared by the fuzz tests of the entry points."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(*words: str) -> st.SearchStrategy[Any]:
    """Any JSON value (integers past 64 bits too: they are JSON), nested a little; `words` are
    strings the entry point knows, drawn as often as any other text."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        *([st.sampled_from(words)] if words else []),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=10,
    )
