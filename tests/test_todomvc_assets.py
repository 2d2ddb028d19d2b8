"""TodoMVC ships the todomvc-app-css stylesheet from npm, unchanged, with its licence."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "syncline/demo/todomvc/static/todomvc-app-css"


def test_the_shipped_stylesheet_is_the_npm_package_file() -> None:
    npm = ROOT / "node_modules/todomvc-app-css/index.css"
    assert npm.exists(), "run `npm ci` (make test does) to compare with the npm package"
    assert (SHIPPED / "index.css").read_bytes() == npm.read_bytes()
    assert (
        "Creative Commons" in (SHIPPED / "license").read_text()
        or "CC" in (SHIPPED / "license").read_text()
    )
