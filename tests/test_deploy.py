"""The container image of docs/operations.md, checked where no container runtime runs.

This machine has the docker client but no daemon, and no registry to pull
``python:3.11-slim`` from, so the image cannot be built here. Instead the test replays
the Dockerfile's own steps as a plain ``pip install`` layout: the build context (what
.dockerignore leaves), a virtual environment at the image's ``/opt/syncline`` installed
with the Dockerfile's ``pip install`` line (non-editable: the wheel's package data must
be complete), the application copied to ``/app``, then the ENTRYPOINT and CMD run as
the image's unprivileged user (uid from ``USER``, through ``setpriv``) with ``/data``
its only writable directory, and the HEALTHCHECK command run against it. What differs,
and why: the paths live under a temporary directory; the port is a free one; the
dependencies come from this test run's environment (a ``.pth`` file) rather than from
the network, so only syncline itself is built and installed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def one(keyword: str) -> str:
    found = [args for k, args in instructions() if k == keyword]
    assert len(found) == 1, f"the Dockerfile should have one {keyword}, has {found}"
    return found[0]


def test_the_dockerfile_is_what_the_guide_says() -> None:
    assert one("FROM") == "python:3.11-slim"
    user = one("USER")
    assert user not in ("root", "0") and user.isdigit(), "a numeric, unprivileged USER"
    runs = [args for k, args in instructions() if k == "RUN"]
    assert any("pip install '/src[standard,postgres,redis]'" in r for r in runs)
    assert any(f"--uid {user}" in r and "useradd" in r for r in runs)
    health = one("HEALTHCHECK")
    assert "/sync/health" in health and "--interval=" in health
    assert json.loads(one("ENTRYPOINT")) == ["syncline", "serve"]
    command = json.loads(one("CMD"))
    assert command[command.index("--db") + 1].startswith("/data/")
    assert command[command.index("--host") + 1] == "0.0.0.0"
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert "docker build -t syncline ." in guide
    assert "tests/test_deploy.py" in guide  # says how it is checked here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ignored(patterns: list[str]) -> Callable[[str, list[str]], set[str]]:
    """A copytree ``ignore`` for .dockerignore's patterns (the forms it uses)."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(ROOT)
        out = set()
        for name in names:
            path = str(rel / name) if str(rel) != "." else name
            for p in patterns:
                bare = p.removeprefix("**/")
                if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, bare):
                    out.add(name)
        return out

    return ignore


@pytest.fixture
def layout() -> Iterator[Path]:
    """A directory the unprivileged user can traverse (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="syncline-deploy-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_image_steps_run_as_a_pip_install_layout(
    layout: Path, request: pytest.FixtureRequest
) -> None:
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run as the image's user")
    paths = {"/src": layout / "src", "/opt/syncline": layout / "opt/syncline"}
    paths |= {"/app": layout / "app", "/data": layout / "data"}

    def here(text: str) -> str:
        for image_path, local in paths.items():
            text = text.replace(image_path, str(local))
        return text

    # COPY . /src, minus .dockerignore.
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    shutil.copytree(ROOT, paths["/src"], ignore=ignored(patterns))
    assert not (paths["/src"] / ".venv").exists() and (paths["/src"] / "pyproject.toml").exists()

    # RUN python -m venv ... && pip install ... && rm -rf /src; dependencies from here.
    [install] = [a for k, a in instructions() if k == "RUN" and "pip install" in a]
    site = sysconfig.get_paths()["purelib"]
    for step in install.split("&&"):
        argv = shlex.split(here(step))
        if argv[:3] == ["python", "-m", "venv"]:
            argv[0] = sys.executable
        subprocess.run(argv, check=True, capture_output=True, timeout=300)
        if "venv" in argv:
            venv_site = next((paths["/opt/syncline"] / "lib").glob("python3*/site-packages"))
            (venv_site / "_deps_of_this_test_run.pth").write_text(site + "\n")
            _let_others_traverse(Path(site), request)
    assert not paths["/src"].exists()
    venv_python = paths["/opt/syncline"] / "bin" / "python"
    where = subprocess.run(
        [venv_python, "-c", "import syncline; print(syncline.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=layout,
    ).stdout
    assert where.startswith(str(paths["/opt/syncline"])), where  # the wheel, not the tree

    # WORKDIR /app (and what is copied there); the user owns /data only.
    assert one("WORKDIR") == "/app"
    paths["/app"].mkdir()
    for copy in [a for k, a in instructions() if k == "COPY" and "/app" in a]:
        source, target = copy.split()
        shutil.copytree(ROOT / source, here(target))
    uid = int(one("USER"))
    paths["/data"].mkdir()
    os.chown(paths["/data"], uid, uid)

    port = free_port()
    env = {
        "PATH": f"{paths['/opt/syncline'] / 'bin'}:/usr/bin:/bin",
        "HOME": str(paths["/data"]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    argv = json.loads(one("ENTRYPOINT")) + json.loads(one("CMD"))
    argv = [here(a) for a in argv]
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--host") + 1] = "127.0.0.1"  # this test's traffic stays on loopback
    argv[0] = str(paths["/opt/syncline"] / "bin" / argv[0])
    health = json.loads(one("HEALTHCHECK").split("CMD", 1)[1])
    health = [here(a).replace(":8000/", f":{port}/") for a in health]
    unhealthy = subprocess.run(as_user + health, env=env, capture_output=True, timeout=30)
    assert unhealthy.returncode != 0  # nothing serves yet: the check says so
    server = subprocess.Popen(
        as_user + argv,
        cwd=paths["/app"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                if get(f"http://127.0.0.1:{port}/") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not answer within 60 s"
            time.sleep(0.2)
        assert get(f"http://127.0.0.1:{port}/sync/client.js") == 200  # package data installed
        check = subprocess.run(as_user + health, env=env, capture_output=True, timeout=30)
        status = get(f"http://127.0.0.1:{port}/sync/health")
        if status == 200:
            assert check.returncode == 0, check.stderr
        else:  # a build without the health endpoints: the image says unhealthy
            assert status == 404 and check.returncode != 0
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    db = paths["/data"] / "syncline.sqlite3"
    assert db.exists() and db.stat().st_uid == uid, output
    # `docker stop` sends SIGTERM: a graceful shutdown (uvicorn then re-raises it).
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output


def _let_others_traverse(path: Path, request: pytest.FixtureRequest) -> None:
    """The image's user reads this run's dependencies (the .pth above): a checkout in a
    private folder (``mktemp -d`` makes 0700 ones) would hide them from it. Each
    ancestor that others cannot enter gets ``o+x`` for the test's length, no more."""
    changed: list[tuple[Path, int]] = []
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)
            changed.append((folder, mode))
    request.addfinalizer(lambda: [f.chmod(m) for f, m in reversed(changed)])
