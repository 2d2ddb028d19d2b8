"""The command line: explains itself, and the demo shows convergence."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from syncline.cli import app


def test_help_explains_the_tool_and_lists_demo() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "keeps a Python server's data in sync" in result.output
    assert "demo" in result.output


def test_the_demo_prints_the_conflict_and_converges() -> None:
    result = CliRunner().invoke(app, ["demo", "--console", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "conflict" in result.output
    assert "status: base='todo' mine='blocked' theirs='doing'" in result.output
    assert result.output.rstrip().endswith("converged: True")


def test_bad_arguments_get_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["demo", "--console", "--seed", "many"])
    assert result.exit_code == 2
    assert "Invalid value for '--seed'" in result.output


def test_the_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "syncline", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout
