"""Page-load bytes of the TodoMVC demo in Chromium, first visit and reload: what the
browser modules' validators (``ETag``, ``Last-Modified``) save.

    .venv/bin/python tests/measure_module_revalidation.py

(from the repository root). The demo server runs as ``python -m syncline demo todomvc``
in the current directory: for the figures before the validators, run this file from a
checkout of before them (commit 7c5e256). Not a test: it prints
figures; tests/e2e/test_module_revalidation.py asserts the behaviour with it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class Load:
    """What one page load fetched: per URL, its status and bytes on the wire."""

    responses: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def modules(self) -> dict[str, tuple[int, int]]:
        return {u: r for u, r in self.responses.items() if "/sync/" in u and u.endswith(".js")}

    @property
    def bytes(self) -> int:
        return sum(size for _status, size in self.responses.values())

    def summary(self) -> str:
        mods = self.modules
        statuses = sorted({status for status, _ in mods.values()})
        return (
            f"{len(self.responses)} responses, {self.bytes} bytes; {len(mods)} browser modules "
            f"({', '.join(map(str, statuses))}), {sum(s for _, s in mods.values())} bytes"
        )


async def load_twice(browser: Any, url: str) -> tuple[Load, Load]:
    """Open ``url`` in a fresh context, then reload it: the two loads' responses."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        loads = [Load(), Load()]
        current = loads[0]
        pending: list[asyncio.Task[None]] = []

        async def record(request: Any) -> None:
            response = await request.response()
            if response is None:
                return
            sizes = await request.sizes()
            size = sizes["responseBodySize"] + sizes["responseHeadersSize"]
            current.responses[request.url] = (response.status, size)

        def finished(request: Any) -> None:
            pending.append(asyncio.ensure_future(record(request)))

        page.on("requestfinished", finished)
        await page.goto(url)
        await page.wait_for_selector("html[data-syncline-ready]", state="attached")
        await page.wait_for_load_state("networkidle")
        await asyncio.gather(*pending)
        current = loads[1]
        pending.clear()
        await page.reload()
        await page.wait_for_selector("html[data-syncline-ready]", state="attached")
        await page.wait_for_load_state("networkidle")
        await asyncio.gather(*pending)
        return loads[0], loads[1]
    finally:
        await context.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main() -> None:
    from playwright.async_api import async_playwright

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "todomvc.sqlite3")
        server = subprocess.Popen(
            [sys.executable, "-m", "syncline", "demo", "todomvc", "--port", str(port), "--db", db],
            stdout=subprocess.DEVNULL,
            env=os.environ,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert server.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                first, reload = await load_twice(browser, f"http://127.0.0.1:{port}/")
                await browser.close()
        finally:
            server.terminate()
            server.wait(10)
    print(f"first visit: {first.summary()}")
    print(f"reload:      {reload.summary()}")


if __name__ == "__main__":
    asyncio.run(main())
