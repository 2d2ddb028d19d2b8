"""The Python client's undo API (``client.undo()``, ``redo()``, ``can_undo``,
``undo_group()``, the ``undo-partial`` event) and its undo stacks surviving a restart
in the pending file, with no connection: frames fed by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from syncline.client import Client, ClientEvent
from syncline.exceptions import SetupError
from syncline.undo import DEFAULT_LIMIT, History

from .schemas import BOARD
from .test_client import CARD, page_state, welcome

URL = "ws://127.0.0.1:9/sync"


def patch(frm: int, to: int, **data: object) -> dict[str, object]:
    item = {"k": "patch", "id": "c1", "data": data, "fv": dict.fromkeys(data, to), "v": to}
    item["inc"] = 1
    return {"t": "changes", "from": f"e1.{frm}", "to": f"e1.{to}", "q": {"q": [item]}}


async def test_undo_stacks_survive_a_restart_in_the_pending_file(tmp_path: Path) -> None:
    path = tmp_path / "pending.sqlite3"
    first = Client(URL, BOARD, pending_path=path)
    first.hydrate(page_state())
    with first.undo_group():
        first.update("cards", "c1", title="Ship")
        first.increment("cards", "c1", "votes", 2)
    first.add("cards", "c1", "labels", "x")
    assert first.can_undo and not first.can_redo
    await first.close()

    again = Client(URL, BOARD, pending_path=path)
    assert again.can_undo and not again.can_redo
    outcome = again.undo()  # the label, then the group
    assert outcome is not None and not outcome.partial
    assert again.get("cards", "c1") == {**CARD, "title": "Ship", "votes": 2, "id": "c1"}
    assert again.can_redo
    await again.close()

    third = Client(URL, BOARD, pending_path=path)
    assert third.can_redo
    third.undo()
    assert third.get("cards", "c1") == {**CARD, "id": "c1"}
    assert not third.can_undo
    third.redo()
    assert third.get("cards", "c1") == {**CARD, "title": "Ship", "votes": 2, "id": "c1"}
    assert third.pending == [1, 2, 3, 4, 5, 6]  # undo and redo are ordinary mutations
    await third.close()


async def test_an_undo_of_a_field_another_client_changed_is_partial_and_says_so() -> None:
    client = Client(URL, BOARD)
    client.hydrate(page_state())
    events: list[ClientEvent] = []
    client.on("undo-partial", events.append)
    client.update("cards", "c1", title="Mine", rank=2.0)
    p = client.protocol
    p.connection_made()
    p.receive(welcome(), 0.0)
    p.receive({"t": "changes", "from": "e1.5", "to": "e1.5", "q": {}}, 0.0)
    p.receive({"t": "ack", "mid": 1, "status": "applied", "seq": 6}, 0.0)
    p.receive(patch(5, 6, title="Mine", rank=2.0), 0.0)
    p.receive(patch(6, 7, title="Theirs"), 0.0)  # another client, after mine
    outcome = client.undo()
    assert outcome is not None and outcome.partial
    assert [(s.field, s.reason) for s in outcome.skipped] == [
        ("title", "changed by someone else since")
    ]
    assert client.get("cards", "c1") == {**CARD, "title": "Theirs", "id": "c1"}
    assert [(e.kind, e.fields, e.keys) for e in events] == [
        ("undo-partial", ("title",), (("cards", "c1"),))
    ]
    await client.close()


def test_the_undo_history_is_bounded_by_its_documented_default() -> None:
    history = History()
    assert history.limit == DEFAULT_LIMIT == 100
    for mid in range(1, 150):
        history.record(mid, [{"k": "incr", "c": "cards", "id": "c1", "f": "votes", "by": 1}])
    assert len(history.undo_stack) == 100
    assert history.undo_stack[0].mids == [50]
    assert History.from_wire(history.to_wire()).to_wire() == history.to_wire()


def test_the_undo_section_of_the_design_names_tests_that_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    design = (root / "docs" / "design.md").read_text()
    section = design.split("## Undo", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`((?:tests|syncline/static/test)/[\w/.]+?\.(?:py|js))::(\w+)", section)
    assert len(named) >= 5
    for path, test in named:
        source = (root / path).read_text()
        assert re.search(rf"def {test}\b", source), f"{path}::{test} does not exist"
    assert (root / "syncline/static/test/undo_fixture.test.js").exists()


async def test_typing_within_undo_pause_is_one_entry_and_undo_pause_zero_turns_it_off() -> None:
    """``Client(undo_pause=...)`` reaches the replica: quick keystrokes in one field are
    one entry by default (1 s), and each its own entry with ``undo_pause=0``."""
    for pause, undos in ((None, 1), (0.0, 3)):
        c = Client(URL, BOARD) if pause is None else Client(URL, BOARD, undo_pause=pause)
        c.hydrate(page_state())
        for title in ("S", "Sh", "Shi"):  # well within one second of each other
            c.update("cards", "c1", title=title)
        count = 0
        while c.undo() is not None:
            count += 1
        assert count == undos, pause
        assert c.get("cards", "c1") == {**CARD, "id": "c1"}
        await c.close()


def test_a_negative_undo_pause_is_refused_with_a_named_error() -> None:
    with pytest.raises(SetupError, match="undo_pause"):
        Client(URL, BOARD, undo_pause=-1.0)
