"""The public API is exactly what ``__all__`` says, and every error has one root."""

from __future__ import annotations

import inspect

import pytest

import syncline
from syncline import exceptions


def test_all_lists_exactly_the_public_names() -> None:
    """Every name in ``__all__`` resolves (they load lazily), and nothing else is public."""
    for name in syncline.__all__:
        assert getattr(syncline, name) is not None, name
    helpers = {"annotations", "Any", "TYPE_CHECKING"}  # what the lazy loader itself needs
    public = {
        name
        for name, value in vars(syncline).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name not in helpers
    }
    assert public == set(syncline.__all__) - {"__version__"}
    assert set(dir(syncline)) == set(syncline.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        syncline.Nope  # noqa: B018


def test_every_exception_descends_from_the_root_and_is_drawn_in_the_tree() -> None:
    doc = exceptions.__doc__ or ""
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, syncline.SynclineError)
        assert name in doc, f"{name} is missing from the tree in exceptions.py's docstring"
