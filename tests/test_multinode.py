"""Three server nodes over one PostgreSQL schema, joined by a backplane (Redis, then
PostgreSQL LISTEN/NOTIFY): each node is uvicorn in its own process
(``tests/multinode_app.py``) on a free loopback port; the Python clients are real.

What holds on one node holds across nodes: clients on different nodes see each other's
changes; acks, conflicts, replays and resume behave the same whichever node answers;
a page rendered on one node and subscribed on another gets every change after its
cursor; the same mutation sent to two nodes at once applies once; a node killed with
SIGKILL loses nothing acknowledged; a backplane that drops its connections only delays
delivery. A :class:`Balancer` (a TCP proxy in this process) stands for the load
balancer, so a client can reconnect to another node at the same URL.

Each backplane gets one cluster (one schema, one channel) for the module; each test
writes its own board and list, so tests do not see each other's data. Under CI=true a
PostgreSQL or Redis that cannot be reached fails these tests; elsewhere they skip.
Timeouts only guard against hangs; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import redis

from syncline.client import Client, ClientEvent
from syncline.ssr import embed_json

from .conftest import PG_DSN, drop_pg_schema, new_pg_schema, pg_unavailable
from .schemas import BOARD
from .servers import Recorder, ServerProcess
from .test_backplane import REDIS_URL, redis_unavailable

T = 15.0  # a guard against hangs, not a speed requirement
R = TypeVar("R")


def run_async(work: Callable[[], Awaitable[R]]) -> R:
    """Run a coroutine from synchronous code, on a loop of its own thread (the test's
    event loop is not ours to replace)."""

    async def main() -> R:
        return await work()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def check_services(backplane: str) -> None:
    async def postgres() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        await conn.close()

    try:
        run_async(postgres)
    except (OSError, asyncpg.PostgresError) as exc:
        pg_unavailable(exc)
    if backplane == "redis":
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            client.ping()
        except (OSError, redis.RedisError) as exc:
            redis_unavailable(exc)
        finally:
            client.close()


@dataclass
class Cluster:
    nodes: list[ServerProcess]
    backplane: str
    channel: str

    def ws(self, i: int) -> str:
        return self.nodes[i].ws_url

    def http(self, i: int) -> str:
        return self.nodes[i].url


def start_all(nodes: list[ServerProcess]) -> None:
    with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
        for future in [pool.submit(n.start) for n in nodes if n.process is None]:
            future.result()


@pytest.fixture(scope="module", params=["redis", "postgres"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    backplane = request.param
    check_services(backplane)
    schema, channel = new_pg_schema(), f"syncline_test_{secrets.token_hex(6)}"
    env = {
        "SYNCLINE_TEST_PG_DSN": PG_DSN,
        "SYNCLINE_TEST_PG_SCHEMA": schema,
        "SYNCLINE_TEST_BACKPLANE": REDIS_URL if backplane == "redis" else "postgres",
        "SYNCLINE_TEST_CHANNEL": channel,
    }
    folder = tmp_path_factory.mktemp(f"cluster-{backplane}")
    nodes = [
        ServerProcess(folder / f"node{i}", app="tests.multinode_app:app", env=env) for i in range(3)
    ]
    try:
        start_all(nodes)  # at once: their migrations meet under the advisory lock
        yield Cluster(nodes, backplane, channel)
    finally:
        for n in nodes:
            n.kill()
        run_async(lambda: drop_pg_schema(schema))


@pytest.fixture
def up(cluster: Cluster) -> Cluster:
    """The cluster with every node running (a test may have killed one)."""
    start_all(cluster.nodes)
    return cluster


class Balancer:
    """A TCP proxy standing for the load balancer: each new connection goes to the node
    ``target`` names at that moment."""

    def __init__(self, cluster: Cluster, target: int) -> None:
        self.cluster = cluster
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/sync"

    async def __aenter__(self) -> Balancer:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._links):
            writer.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.cluster.nodes[self.target].port
            )
        except OSError:
            writer.close()
            return
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links -= {writer, up_writer}


def client(url: str, **kwargs: Any) -> Recorder:
    kwargs.setdefault("backoff", (0.05, 0.3))
    return Recorder(url, BOARD, **kwargs)


def field(c: Client, record_id: str, name: str) -> Any:
    record = c.get("cards", record_id)
    return None if record is None else record[name]


def acks_of(c: Client) -> list[ClientEvent]:
    seen: list[ClientEvent] = []
    c.on("ack", seen.append)
    return seen


@dataclass
class Board:
    """A test's own board, list and cards (ids unique to the test)."""

    list_id: str
    cards: list[str]

    @property
    def query(self) -> dict[str, Any]:
        return {"cards": {"c": "cards", "where": {"list_id": self.list_id}}}


async def seed(url: str, cards: int = 2) -> Board:
    tag = secrets.token_hex(4)
    board = Board(f"l-{tag}", [f"c{n}-{tag}" for n in range(cards)])
    async with client(url) as admin:
        with admin.batch() as b:
            b.insert("boards", f"b-{tag}", name="Board")
            b.insert("lists", board.list_id, board_id=f"b-{tag}")
            for rid in board.cards:
                b.insert("cards", rid, list_id=board.list_id, title=rid)
        await admin.wait_synced(T)
    return board


# --- the tests --------------------------------------------------------------------------


async def test_clients_on_different_nodes_see_each_others_changes(up: Cluster) -> None:
    board = await seed(up.ws(0))
    c1, c2 = board.cards
    async with client(up.ws(0)) as a, client(up.ws(1)) as b, client(up.ws(2)) as c:
        for x in (a, b, c):
            await x.subscribe(board.query, timeout=T)
        acks = [acks_of(x) for x in (a, b, c)]
        a.update("cards", c1, title="from node 0")
        b.increment("cards", c2, "votes", 3)
        c.insert("cards", f"new-{c1}", list_id=board.list_id, title="from node 2")
        for x in (a, b, c):
            await x.wait_synced(T)
        for x in (a, b, c):
            await x.wait_for(
                lambda x=x: (  # type: ignore[misc]
                    field(x, c1, "title") == "from node 0"
                    and field(x, c2, "votes") == 3
                    and field(x, f"new-{c1}", "title") == "from node 2"
                ),
                T,
            )
        assert a.replica.server_data() == b.replica.server_data() == c.replica.server_data()
        frames = [e.frame for seen in acks for e in seen if e.frame is not None]
        assert [f["status"] for f in frames] == ["applied"] * 3
        assert len({f["seq"] for f in frames}) == 3  # one seq per commit, cluster-wide


async def test_a_manual_conflict_between_nodes_round_trips_as_on_one_node(up: Cluster) -> None:
    board = await seed(up.ws(0))
    c1 = board.cards[0]
    async with client(up.ws(1)) as a, client(up.ws(2)) as b:
        await a.subscribe(board.query, timeout=T)
        await b.subscribe(board.query, timeout=T)
        conflicts: list[ClientEvent] = []
        b.on("conflict", conflicts.append)
        b.pause()  # b edits without having seen a's edit: concurrent
        a.update("cards", c1, status="doing")
        await a.wait_synced(T)
        b.update("cards", c1, status="blocked", title="b's title")
        b.resume()
        await b.wait_for(lambda: bool(b.drafts), T)
        (event,) = conflicts
        assert event.draft is not None
        (conflict,) = event.draft.conflicts
        assert (conflict.base, conflict.mine, conflict.theirs) == ("todo", "blocked", "doing")
        b.resolve(event.draft, {"status": "blocked"})
        await b.wait_synced(T)
        await a.wait_for(lambda: field(a, c1, "status") == "blocked", T)
        await a.wait_synced(T)
        assert field(a, c1, "title") == "b's title"
        assert a.replica.server_data() == b.replica.server_data()


async def test_a_lost_ack_is_replayed_by_another_node_and_applies_once(up: Cluster) -> None:
    board = await seed(up.ws(0))
    c1, c2 = board.cards
    async with Balancer(up, target=0) as lb:
        async with client(lb.url) as a, client(up.ws(2)) as observer:
            await a.subscribe(board.query, timeout=T)
            await observer.subscribe(board.query, timeout=T)
            acks = acks_of(a)
            a.pause()
            a.increment("cards", c1, "votes", 1)
            # Node 0 committed it (a client of node 2 sees it); a never read the ack.
            await observer.wait_for(lambda: field(observer, c1, "votes") == 1, T)
            lb.target = 1
            a.drop()  # reconnects through the balancer, now to node 1, and sends it again
            await a.wait_synced(T)
            (ack,) = [e.frame for e in acks if e.frame is not None]
            assert ack["replay"] is True and isinstance(ack["seq"], int)
            a.increment("cards", c2, "votes", 1)  # the queue goes on after the replay
            await a.wait_synced(T)
            await observer.wait_for(lambda: field(observer, c2, "votes") == 1, T)
            assert field(observer, c1, "votes") == 1  # applied once
            assert a.replica.server_data() == observer.replica.server_data()


async def test_a_page_rendered_on_one_node_gets_every_change_on_another(up: Cluster) -> None:
    board = await seed(up.ws(0))
    c1 = board.cards[0]
    async with httpx.AsyncClient(base_url=up.http(0)) as http:
        response = await http.get("/sync/pull", params={"queries": json.dumps(board.query)})
    snapshot = response.json()
    page_state = {
        "v": 1,
        "schema": BOARD.hash,
        **{k: snapshot[k] for k in ("cursor", "queries", "records")},
    }
    async with client(up.ws(0)) as writer, Balancer(up, target=1) as lb:
        await writer.subscribe(board.query, timeout=T)
        writer.update("cards", c1, title="after the page was rendered")
        await writer.wait_synced(T)  # committed on node 0, maybe not yet read by node 1
        page = client(lb.url)
        page.hydrate(embed_json(page_state))
        async with page:
            await page.wait_for(
                lambda: field(page, c1, "title") == "after the page was rendered", T
            )
            await page.wait_synced(T)
            # Resume on a third node: offline, a change lands; back, it comes as changes.
            lb.target = 2
            page.drop()
            writer.update("cards", c1, title="while the page was away")
            await writer.wait_synced(T)
            await page.wait_for(lambda: field(page, c1, "title") == "while the page was away", T)
            await page.wait_synced(T)
            assert page.replica.server_data() == writer.replica.server_data()
    subs = [f for f in page.sent if f["t"] == "sub"]
    assert subs[0] == {"t": "sub", "queries": snapshot["queries"], "since": snapshot["cursor"]}
    assert len(subs) == 2 and "since" in subs[1]  # resumed from its cursor
    assert not [f for f in page.received if f["t"] == "snapshot"]  # never a second fetch


async def test_the_same_mutation_sent_to_two_nodes_at_once_applies_once(up: Cluster) -> None:
    board = await seed(up.ws(0))
    c1 = board.cards[0]
    client_id = f"http-{secrets.token_hex(6)}"
    op = {"op": "incr", "c": "cards", "id": c1, "field": "votes", "by": 1}
    rounds = 8
    async with (
        httpx.AsyncClient(base_url=up.http(0)) as n0,
        httpx.AsyncClient(base_url=up.http(1)) as n1,
    ):
        for mid in range(1, rounds + 1):
            body = {"client": client_id, "mut": {"id": mid, "ops": [op]}}
            answers = [
                r.json()
                for r in await asyncio.gather(
                    n0.post("/sync/mutate", json=body), n1.post("/sync/mutate", json=body)
                )
            ]
            applied = [a for a in answers if a["t"] == "ack" and not a.get("replay")]
            assert len(applied) == 1, answers
            (other,) = [a for a in answers if a is not applied[0]]
            assert (
                other["t"] == "ack" and other["replay"] and other["seq"] == applied[0]["seq"]
            ) or (other["t"] == "reject" and other["permanent"] is False), answers
    async with client(up.ws(2)) as fresh:
        await fresh.subscribe(board.query, timeout=T)
        assert field(fresh, c1, "votes") == rounds


async def test_a_node_killed_mid_stream_loses_nothing_acknowledged(up: Cluster) -> None:
    board = await seed(up.ws(0))
    c1, c2 = board.cards
    async with Balancer(up, target=0) as lb:
        async with client(lb.url) as a, client(lb.url) as b:
            await a.subscribe(board.query, timeout=T)
            await b.subscribe(board.query, timeout=T)
            for _ in range(5):
                a.increment("cards", c1, "votes")
                b.increment("cards", c1, "votes")
            await a.wait_synced(T)
            await b.wait_synced(T)
            for _ in range(3):  # maybe committed, maybe not, when the node dies
                a.increment("cards", c1, "votes")
                b.increment("cards", c1, "votes")
            lb.target = 1
            await asyncio.to_thread(up.nodes[0].kill, signal.SIGKILL)
            for _ in range(2):  # while reconnecting
                a.increment("cards", c1, "votes")
                b.increment("cards", c1, "votes")
            a.update("cards", c2, title="after the crash")
            await a.wait_synced(T)
            await b.wait_synced(T)
            total = 2 * (5 + 3 + 2)
            for x in (a, b):
                await x.wait_for(lambda x=x: field(x, c1, "votes") == total, T)  # type: ignore[misc]
            async with client(up.ws(2)) as fresh:
                await fresh.subscribe(board.query, timeout=T)
                assert field(fresh, c1, "votes") == total  # nothing lost, nothing twice
                assert field(fresh, c2, "title") == "after the crash"
                await fresh.wait_for(
                    lambda: fresh.replica.server_data() == a.replica.server_data(), T
                )
            assert [f for f in a.sent if f["t"] == "sub" and "since" in f], "a resumed"


async def cut_backplane(cluster: Cluster) -> int:
    """Close every node's backplane listening connection from the server side."""
    if cluster.backplane == "redis":
        admin = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            ids = [
                c["id"]
                for c in await admin.client_list()
                if c.get("name") == f"syncline:{cluster.channel}"
            ]
            for cid in ids:
                await admin.client_kill_filter(_id=cid)
        finally:
            await admin.aclose()
        return len(ids)
    conn = await asyncpg.connect(PG_DSN)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            f"syncline-backplane:{cluster.channel}"[:63],
        )
    finally:
        await conn.close()
    return len(rows)


async def test_backplane_connections_cut_during_a_write_stream_lose_no_change(up: Cluster) -> None:
    board = await seed(up.ws(0))
    c1 = board.cards[0]
    async with client(up.ws(0)) as a, client(up.ws(1)) as b, client(up.ws(2)) as c:
        for x in (a, b, c):
            await x.subscribe(board.query, timeout=T)
        for n in range(30):
            (a, b, c)[n % 3].increment("cards", c1, "votes")
            if n in (5, 15):
                assert await cut_backplane(up) >= 1
            await asyncio.sleep(0.01)
        for x in (a, b, c):
            await x.wait_synced(T)
        for x in (a, b, c):
            await x.wait_for(lambda x=x: field(x, c1, "votes") == 30, T)  # type: ignore[misc]
        assert a.replica.server_data() == b.replica.server_data() == c.replica.server_data()


def test_every_node_logged_no_error(cluster: Cluster) -> None:
    """Runs last in the module: nothing went wrong inside the nodes."""
    for node in cluster.nodes:
        text = (
            Path(node.log_path).read_text(errors="replace") if Path(node.log_path).exists() else ""
        )
        assert "Traceback" not in text, text[-3000:]
