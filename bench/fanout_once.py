"""One short fan-out measurement of some systems at 100 subscribers (3 s at 100
changes a second, 1 s of flood), to repeat back to back when ``syncline bench`` figures
swing on a shared machine::

    .venv/bin/python bench/fanout_once.py syncline websockets-floor
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from syncline.bench.scenarios import Plan, _fanout_one

if __name__ == "__main__":
    plan = Plan((100,), 3.0, 1.0, (1,), 1.0, (100,), 1, subscriber_processes=1)
    workdir = Path(tempfile.mkdtemp())
    for system in sys.argv[1:]:
        m = _fanout_one(plan, workdir, system, 100).metrics
        print(
            f"{system:18} p50 {m['p50_ms']:.2f} ms  p99 {m['p99_ms']:.2f} ms  "
            f"delivered {m['delivered_per_s']:,.0f}/s  server CPU {m['server_cpu_pct']:.0f}%",
            flush=True,
        )
