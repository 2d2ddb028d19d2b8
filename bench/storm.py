"""Live latency of connected clients while thousands of clients resume at once.

Runs the storm of tests/test_storm.py (a real server in a subprocess on a SQLite
file; 20 live subscribers get a steady stream of inserts; the storm's clients, in a
process of their own, connect at once and resume since one of ten cursors) and prints
how long the storm took and the live subscribers' latency during it::

    .venv/bin/python bench/storm.py [--clients 2000] [--live 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_storm import storm


async def main(clients: int, live: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        f = await storm(Path(tmp), clients, live)
    print(
        f"{f['clients']} resumes ({f['failed']} failed) in {f['storm_seconds']:.2f} s; "
        f"live latency during the storm over {f['changes_during']} changes: "
        f"p50 {f['p50']:.3f} s, p99 {f['p99']:.3f} s, max {f['max']:.3f} s; "
        f"every change reached every subscriber: {f['all_received']}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--live", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.live))
