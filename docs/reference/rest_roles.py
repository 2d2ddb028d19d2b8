"""A griffe extension for the API reference: syncline's docstrings are reST-flavoured
(``code``, :class:`Name` roles, ``::`` before a literal block) and mkdocstrings renders
Markdown, so each docstring is rewritten before it is parsed: a role becomes inline code
(its last dotted part, as Sphinx shows ``~``), and ``text::`` ends with one colon (the
indented block after it is already a Markdown code block)."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj|py:\w+):`~?([^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::$", re.M)


def markdown(text: str) -> str:
    """``text`` with reST roles as inline code and ``::`` block openers as ``:``."""
    text = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return _LITERAL.sub(":", text)


class RestRoles(griffe.Extension):
    """Rewrite every docstring once, as soon as its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
