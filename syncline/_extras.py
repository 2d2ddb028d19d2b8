"""Optional dependencies: ``pip install syncline`` is the core alone, so a module that
needs one imports it at its top and turns its absence into one line naming the extra::

    try:
        import asyncpg
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, "asyncpg", "PostgreSQL support", "postgres") from None

The extras are declared in pyproject.toml; ``tests/test_packaging.py`` installs the
wheel and checks that every module either imports with the core or says which extra."""

from __future__ import annotations

import importlib.util

from .exceptions import MissingExtra

__all__ = ["missing_extra", "require"]

_DISTRIBUTIONS = {"socketio": "python-socketio", "prometheus_client": "prometheus-client"}
"""Modules whose distribution on PyPI has another name."""


def _message(modules: list[str], feature: str, extra: str) -> str:
    names = ", ".join(_DISTRIBUTIONS.get(m, m) for m in modules)
    return f"{feature} needs {names}: pip install 'syncline[{extra}]'"


def missing_extra(error: ModuleNotFoundError, module: str, feature: str, extra: str) -> ImportError:
    """The :class:`MissingExtra` to raise when ``error`` says ``module`` itself is absent;
    otherwise ``error`` (the module is there but broken: its own cause is the news)."""
    if (error.name or "").partition(".")[0] != module:
        return error
    return MissingExtra(_message([module], feature, extra), name=module, extra=extra)


def require(feature: str, extra: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` naming every one of ``modules`` (top-level names) that
    is not installed, without importing any: for a feature whose modules load its
    dependencies late, such as the benchmark's peer servers."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(_message(missing, feature, extra), name=missing[0], extra=extra)
