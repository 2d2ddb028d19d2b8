"""``python -m syncline`` and the ``syncline`` console script.

The command line comes with the ``standard`` extra, and some commands need more
(``--db postgresql://`` needs ``postgres``): when one is missing, say so in one line
naming the extra to install, not in a traceback."""

from __future__ import annotations

import sys

from .exceptions import MissingExtra


def main() -> None:
    try:
        from .cli import main as run

        run()
    except MissingExtra as exc:
        sys.exit(f"syncline: {exc}")


if __name__ == "__main__":
    main()
