"""The ``syncline`` command line."""

from __future__ import annotations

import asyncio

import typer

app = typer.Typer(
    name="syncline",
    help=(
        "syncline keeps a Python server's data in sync with every client, "
        "starting from server-rendered pages."
    ),
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """syncline keeps a Python server's data in sync with every client."""


@app.command()
def demo(
    seed: int = typer.Option(7, help="Seed for the simulated clients' choices."),
) -> None:
    """Show the sync core at work: two clients edit one card at once; watch the merge,
    the conflict and the converged result.

    The web demo (a collaborative board) replaces this once the server exists.
    """
    from ._demo import run

    asyncio.run(run(seed))


def main() -> None:
    app()
