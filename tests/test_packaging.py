"""The package as a user gets it: built from this tree with ``python -m build`` (the
wheel from the sdist, as from a clean clone), installed into a fresh venv.

``pip install syncline`` is the core alone, an allow-list of distributions; every
module of the wheel either imports with the core or fails with one line naming its
extra; ``syncline[standard]`` then adds the server and the command line, and
``syncline demo`` and ``syncline serve syncline.examples.notes.app:app`` serve pages.
The build and the venv are made once for the module (about a minute, through pip's
cache)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.packaging

CORE = {"pydantic", "orjson", "msgspec", "starlette", "markupsafe"}
"""The core's direct dependencies (pyproject.toml's ``dependencies``)."""

CORE_ALLOWED = CORE | {
    "syncline",
    "pydantic-core",
    "annotated-types",
    "typing-extensions",
    "typing-inspection",
    "anyio",
    "idna",
    "sniffio",
}
"""Everything ``pip install syncline`` may bring: the core and what it depends on."""

STANDARD_ALLOWED = CORE_ALLOWED | {
    "uvicorn",
    "h11",
    "click",
    "httptools",
    "uvloop",
    "watchfiles",
    "websockets",
    "python-dotenv",
    "pyyaml",
    "typer",
    "shellingham",
    "annotated-doc",
    "rich",
    "markdown-it-py",
    "mdurl",
    "pygments",
    "jinja2",
    "itsdangerous",
}
"""What ``syncline[standard]`` may add: uvicorn[standard], typer, rich, the demos'."""

EXTRA_OF = {
    "syncline.bench": "bench",
    "syncline.cli": "standard",
    "syncline.demo": "standard",
    "syncline.client.client": "client",
    "syncline.examples.notes.two_clients": "client",
    "syncline.examples.tiny": "standard",
    "syncline.fanout.postgres": "postgres",
    "syncline.fanout.redis": "redis",
    "syncline.metrics": "metrics",
    "syncline.store.postgres": "postgres",
}
"""The modules (and packages) that need an extra; every other one imports with the core."""

# Run inside the venv: import every module of the installed package, and say how it went.
WALK = """
import importlib, json, pathlib, syncline
root = pathlib.Path(syncline.__file__).parent
seen = {"__file__": str(root)}
for path in sorted(root.rglob("*.py")):
    parts = path.relative_to(root.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    try:
        importlib.import_module(name)
        seen[name] = "core"
    except ImportError as exc:  # MissingExtra carries the extra it names
        seen[name] = f"{getattr(exc, 'extra', 'error')}: {exc}"
    except BaseException as exc:  # SystemExit too: importing a module must not run it
        seen[name] = f"error: {type(exc).__name__}: {exc}"
print(json.dumps(seen))
"""

DISTRIBUTIONS = (
    "import importlib.metadata as m; print('\\n'.join(d.name for d in m.distributions()))"
)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _tree_version() -> str:
    text = (ROOT / "syncline" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"$', text, flags=re.M)
    assert found, "syncline/__init__.py has no __version__"
    return found.group(1)


@dataclass(frozen=True)
class Venv:
    path: Path
    work: Path  # the working directory: outside the tree, so the tree is not imported

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return subprocess.run(
            args, cwd=self.work, env=env, capture_output=True, text=True, timeout=timeout
        )

    def pip_install(self, requirement: str) -> None:
        done = self.run(self.python, "-m", "pip", "install", "--quiet", requirement)
        assert done.returncode == 0, done.stderr

    def distributions(self) -> set[str]:
        done = self.run(self.python, "-c", DISTRIBUTIONS)
        assert done.returncode == 0, done.stderr
        return {_normal(line) for line in done.stdout.split()}


@dataclass(frozen=True)
class CoreInstall:
    """What the venv showed with the core alone, recorded before any extra goes in."""

    venv: Venv
    before: set[str]  # the fresh venv's own (pip, setuptools)
    added: set[str]
    modules: dict[str, str]
    console: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("syncline-*.whl")
    return found


@pytest.fixture(scope="module")
def core(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> CoreInstall:
    base = tmp_path_factory.mktemp("venv")
    venv = Venv(base / "venv", base)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv.path)], timeout=120)
    assert made.returncode == 0
    before = venv.distributions()
    venv.pip_install(str(wheel))
    added = venv.distributions() - before
    walked = venv.run(venv.python, "-c", WALK)
    assert walked.returncode == 0, walked.stderr
    console = venv.run(str(venv.path / "bin" / "syncline"), "--help")
    return CoreInstall(venv, before, added, json.loads(walked.stdout.splitlines()[-1]), console)


@pytest.fixture(scope="module")
def standard(core: CoreInstall, wheel: Path) -> Venv:
    core.venv.pip_install(f"{wheel}[standard]")
    return core.venv


def test_the_build_passes_twine_check(dist: Path) -> None:
    files = sorted(str(p) for p in dist.iterdir())
    assert len(files) == 2, files  # the sdist and the wheel
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_wheel_carries_the_version_and_the_examples(wheel: Path) -> None:
    version = _tree_version()
    assert wheel.name == f"syncline-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"syncline-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata
    assert "syncline/examples/notes/app.py" in names
    assert "syncline/py.typed" in names
    assert not [n for n in names if n.startswith("syncline/static/test/")]
    assert not [n for n in names if n.startswith(("tests/", "examples/", "bench/"))]


def test_the_core_install_is_the_allow_list(core: CoreInstall) -> None:
    assert core.added >= CORE | {"syncline"}
    assert core.added <= CORE_ALLOWED, f"not in the core: {sorted(core.added - CORE_ALLOWED)}"


def test_every_module_imports_with_the_core_or_names_its_extra(core: CoreInstall) -> None:
    modules = dict(core.modules)
    assert modules.pop("__file__").startswith(str(core.venv.path))  # not this tree
    assert len(modules) > 50
    for name, outcome in modules.items():
        extra = next(
            (e for m, e in EXTRA_OF.items() if name == m or name.startswith(f"{m}.")), None
        )
        if extra is None:
            assert outcome == "core", f"{name}: {outcome}"
        else:
            assert outcome.startswith(f"{extra}: "), f"{name}: {outcome}"
            assert outcome.endswith(f"pip install 'syncline[{extra}]'"), outcome
    assert modules["syncline.store.postgres"] == (
        "postgres: PostgreSQL support needs asyncpg: pip install 'syncline[postgres]'"
    )


def test_the_command_without_its_extra_says_which_in_one_line(core: CoreInstall) -> None:
    assert core.console.returncode == 1
    assert core.console.stdout == ""
    assert core.console.stderr == (
        "syncline: The syncline command needs typer: pip install 'syncline[standard]'\n"
    )


def test_standard_adds_the_server_and_the_command_only(core: CoreInstall, standard: Venv) -> None:
    added = standard.distributions() - core.before - core.added
    assert {"uvicorn", "uvloop", "httptools", "websockets", "typer", "rich", "jinja2"} <= added
    assert added <= STANDARD_ALLOWED, f"not in standard: {sorted(added - STANDARD_ALLOWED)}"


def test_the_installed_version_is_the_tree_s(standard: Venv) -> None:
    probe = "import importlib.metadata as m, syncline\n"
    probe += "print(m.version('syncline'), syncline.__version__)"
    done = standard.run(standard.python, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [_tree_version()] * 2
    said = standard.run(str(standard.path / "bin" / "syncline"), "--version")
    assert said.returncode == 0, said.stderr
    assert _tree_version() in said.stdout


@pytest.mark.parametrize(
    ("command", "page"),
    [
        (["demo", "--db", "demo.sqlite3"], "syncline demo</title>"),
        (
            ["serve", "syncline.examples.notes.app:app", "--db", "notes.sqlite3"],
            "<h1>Notes</h1>",
        ),
    ],
    ids=["demo", "serve-notes"],
)
def test_standard_serves_a_page(standard: Venv, command: list[str], page: str) -> None:
    port = free_port()
    with _running(standard, [*command, "--port", str(port)]) as server:
        response = _get_when_up(f"http://127.0.0.1:{port}/", server)
    assert response.status_code == 200
    assert page in response.text
    assert 'id="syncline-state"' in response.text


@contextlib.contextmanager
def _running(venv: Venv, args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    server = subprocess.Popen(
        [str(venv.path / "bin" / "syncline"), *args],
        cwd=venv.work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield server
    finally:
        server.terminate()
        server.wait(15)


def _get_when_up(url: str, server: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            assert server.poll() is None, f"the server exited with {server.returncode}"
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.1)


def test_a_broken_dependency_shows_its_own_cause() -> None:
    """Only the dependency's own absence is news of a missing extra: a module missing
    inside it (a broken install) keeps its error."""
    from syncline._extras import missing_extra
    from syncline.exceptions import MissingExtra

    absent = ModuleNotFoundError("No module named 'asyncpg'", name="asyncpg")
    made = missing_extra(absent, "asyncpg", "PostgreSQL support", "postgres")
    assert isinstance(made, MissingExtra) and isinstance(made, ImportError)
    assert (made.name, made.extra) == ("asyncpg", "postgres")
    inner = ModuleNotFoundError("No module named 'async_timeout'", name="async_timeout")
    assert missing_extra(inner, "asyncpg", "PostgreSQL support", "postgres") is inner
