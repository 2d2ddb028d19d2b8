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


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"syncline {version('syncline')}"


def test_every_serve_and_demo_option_has_an_environment_variable_shown_in_help() -> None:
    import typer.main

    group = typer.main.get_command(app)
    for name in ("serve", "demo"):
        command = group.commands[name]  # type: ignore[attr-defined]
        out = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        for param in command.params:
            if param.name == "help":
                continue
            assert param.envvar, f"{name} {param.name} has no environment variable"
            envvar = param.envvar if isinstance(param.envvar, str) else param.envvar[0]
            assert envvar.startswith("SYNCLINE_"), envvar
            assert f"env var: {envvar}" in out, f"{envvar} is not in {name} --help"
