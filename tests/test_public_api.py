"""The public API is exactly what ``__all__`` says, and every error has one root."""

from __future__ import annotations

import inspect

import syncline
from syncline import exceptions


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(syncline).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(syncline.__all__) - {"__version__"}


def test_every_exception_descends_from_the_root_and_is_drawn_in_the_tree() -> None:
    doc = exceptions.__doc__ or ""
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, syncline.SynclineError)
        assert name in doc, f"{name} is missing from the tree in exceptions.py's docstring"
