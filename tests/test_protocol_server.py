"""ServerProtocol driven with raw frames and a fake clock: no socket, no server, no
store. Every transition of the table, the limits, the rate bucket, malformed frames,
and the frames the protocol answers with."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from syncline.protocol.frames import Limits, ProtocolError, decode_client_frame, encode, encode_text
from syncline.protocol.server import (
    REFUSALS,
    TRANSITIONS,
    Hello,
    Mutate,
    Ping,
    Pong,
    ProtocolMisuse,
    ServerProtocol,
    State,
    Subscribe,
    Unsubscribe,
)
from syncline.results import Ack, OpResult

HELLO = {"t": "hello", "v": 1, "client": "tab-0001abcd", "schema": "abc", "acked": 3}
FRAMES: dict[str, dict[str, Any]] = {
    "hello": HELLO,
    "sub": {"t": "sub", "queries": {"q": {"c": "cards"}}, "since": "e.4"},
    "unsub": {"t": "unsub", "queries": ["q"]},
    "mut": {"t": "mut", "id": 1, "ops": [{"op": "delete", "c": "cards", "id": "c1"}]},
    "ping": {"t": "ping", "n": 7},
    "pong": {"t": "pong"},
}
EVENTS = {
    "hello": Hello,
    "sub": Subscribe,
    "unsub": Unsubscribe,
    "mut": Mutate,
    "ping": Ping,
    "pong": Pong,
}


def raw(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def in_state(state: State, limits: Limits | None = None) -> ServerProtocol:
    p = ServerProtocol(limits or Limits())
    if state is not State.AWAIT_HELLO:
        p.receive(raw(HELLO), 0.0)
    if state is State.CLOSED:
        p.close()
    return p


def refused(p: ServerProtocol, data: str | bytes, now: float = 0.0) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        p.receive(data, now)
    return info.value


def refused_mutation(p: ServerProtocol, data: str, now: float = 0.0) -> ProtocolError:
    """A mut frame refused for good: an event with its id, which the id uses up."""
    event = p.receive(data, now)
    assert isinstance(event, Mutate) and event.refusal is not None, event
    assert event.mutation == {"id": event.mutation_id, "ops": []}
    return event.refusal


# --- the transition table ----------------------------------------------------------------


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("kind", list(FRAMES))
def test_every_state_and_frame_does_what_the_table_says(state: State, kind: str) -> None:
    p = in_state(state)
    after = TRANSITIONS[state].get(kind)
    if after is None:
        code, message = REFUSALS[state]
        error = refused(p, raw(FRAMES[kind]))
        assert (error.code, str(error)) == (code, message.format(t=kind))
        assert p.state is state and not error.fatal
    else:
        assert isinstance(p.receive(raw(FRAMES[kind]), 0.0), EVENTS[kind])
        assert p.state is after


def test_hello_must_come_first_and_only_once() -> None:
    p = ServerProtocol()
    error = refused(p, raw(FRAMES["mut"]))
    assert (error.code, str(error), error.ref) == ("bad_state", "send hello before mut", 1)
    hello = p.receive(raw(HELLO), 0.0)
    assert hello == Hello("tab-0001abcd", "abc", None, 3)
    assert p.client_id == "tab-0001abcd" and p.state is State.READY
    again = refused(p, raw(HELLO))
    assert (again.code, str(again)) == ("bad_state", "hello was already sent on this connection")


def test_events_carry_the_frame_decoded() -> None:
    p = in_state(State.READY)
    assert p.receive(raw(FRAMES["sub"]), 0) == Subscribe({"q": {"c": "cards"}}, "e.4")
    assert p.receive(raw(FRAMES["unsub"]), 0) == Unsubscribe(["q"])
    mut = p.receive(raw({**FRAMES["mut"], "base": 4, "mode": "partial"}), 0)
    assert mut == Mutate({"id": 1, "ops": FRAMES["mut"]["ops"], "base": 4, "mode": "partial"}, 1)
    assert p.receive(raw(FRAMES["ping"]), 0) == Ping(7)
    assert p.receive('{"t":"ping"}', 0) == Ping(None)


def test_another_protocol_version_is_fatal_and_stays_before_hello() -> None:
    p = ServerProtocol()
    error = refused(p, raw({**HELLO, "v": 2}))
    assert (error.code, error.fatal) == ("version", True)
    assert "version 2 is not supported" in str(error) and p.state is State.AWAIT_HELLO


def test_a_closed_protocol_refuses_everything_even_garbage() -> None:
    p = in_state(State.CLOSED)
    assert refused(p, "{not json").code == "closed"


# --- malformed frames ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        ("{not json", "bad_json", "frame is not valid JSON"),
        ("[1, 2]", "bad_frame", "a frame is a JSON object, not list"),
        ('"hello"', "bad_frame", "a frame is a JSON object, not str"),
        ("{}", "unknown_frame", "unknown frame type None"),
        ('{"t": "explode"}', "unknown_frame", "unknown frame type 'explode'; expected one of"),
        ('{"t": "sub", "queries": {}}', "bad_frame", "sub frame: queries: Expected `object`"),
        ('{"t": "sub", "queries": {"q": 1}}', "bad_frame", "sub frame: queries"),
        ('{"t": "unsub", "queries": "q"}', "bad_frame", "queries: Input should be a valid list"),
        ('{"t": "ping", "n": "7"}', "bad_frame", "ping frame: n: Input should be"),
        ('{"t": "ping", "n": true}', "bad_frame", "ping frame: n: Input should be"),
        ('{"t": "pong", "x": 1}', "bad_frame", "pong frame: x: Extra inputs are not permitted"),
        ('{"t": "unsub"}', "bad_frame", "unsub frame: queries: Field required"),
        ('{"t": "ping", "n": 123456789012345678901234567890}', "bad_json", "64-bit"),
    ],
)
def test_malformed_frames_are_errors_naming_the_problem(data: str, code: str, message: str) -> None:
    error = refused(in_state(State.READY), data)
    assert error.code == code and message in str(error), str(error)
    assert not error.fatal and error.ref is None


def test_a_binary_frame_is_refused_though_it_holds_json() -> None:
    p = in_state(State.READY)
    error = refused(p, encode(FRAMES["ping"]))
    assert error.code == "bad_frame" and "binary frames are not part of the protocol" in str(error)
    assert p.state is State.READY


def test_a_malformed_mut_with_a_readable_id_uses_the_id_up() -> None:
    p = in_state(State.READY)
    bad = refused_mutation(p, raw({"t": "mut", "id": 2, "ops": [], "extra": 1}))
    assert bad.code == "bad_frame" and "extra: Extra inputs are not permitted" in str(bad)
    wrong = refused_mutation(p, raw({"t": "mut", "id": 3, "ops": "nope"}))
    assert wrong.code == "bad_frame" and "ops: Input should be a valid list" in str(wrong)
    # Without a usable id it cannot be attributed: an error, nothing used up.
    for mid in ("one", 0, True, None):
        error = refused(p, raw({"t": "mut", "id": mid, "ops": []}))
        assert error.code == "bad_frame" and error.ref == (mid if mid == 0 else None)


def test_receive_takes_frames_only() -> None:
    with pytest.raises(ProtocolMisuse, match="takes a frame's str or bytes"):
        ServerProtocol().receive({"t": "ping"}, 0.0)  # type: ignore[arg-type]


# --- limits ----------------------------------------------------------------------------


def test_an_oversize_mut_is_refused_with_its_id_however_large() -> None:
    p = in_state(State.READY, Limits(max_frame_bytes=1000))
    for size in (2_000, 20_000):  # 2x and 20x the limit: both attributable
        frame = raw({"t": "mut", "ops": [{"op": "x", "pad": "x" * size}], "id": 5})
        error = refused_mutation(p, frame)
        assert error.code == "too_large" and "exceeds the limit of 1000" in str(error)
    other = refused(p, raw({"t": "sub", "queries": {"q": {"c": "x" * 2000}}}))
    assert other.code == "too_large" and other.ref is None


def test_ops_strings_depth_and_subscriptions_are_bounded() -> None:
    limits = Limits(max_ops=2, max_string=50, max_subscriptions=2, max_depth=8)
    p = in_state(State.READY, limits)
    op = {"op": "delete", "c": "cards", "id": "c1"}
    too_many = refused_mutation(p, raw({"t": "mut", "id": 1, "ops": [op] * 3}))
    assert too_many.code == "limit" and "at most 2 ops" in str(too_many)
    too_long = refused_mutation(p, raw({"t": "mut", "id": 2, "ops": [{**op, "id": "y" * 60}]}))
    assert too_long.code == "limit" and "60 characters exceeds the limit of 50" in str(too_long)
    deep: Any = "x"
    for _ in range(10):
        deep = [deep]
    too_deep = refused_mutation(p, raw({"t": "mut", "id": 3, "ops": deep}))
    assert too_deep.code == "bad_frame" and "nested more than 8 levels" in str(too_deep)
    very_deep = refused(p, '{"t": "ping", "n": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert very_deep.code == "bad_frame" and "nested more than" in str(very_deep)
    queries = {f"q{i}": {"c": "cards"} for i in range(3)}
    subs = refused(p, raw({"t": "sub", "queries": queries}))
    assert subs.code == "limit" and "at most 2 queries" in str(subs)


def test_the_rate_bucket_refuses_for_now_and_refills_with_time() -> None:
    p = in_state(State.READY, Limits(mutations_per_second=2, mutation_burst=3))
    for mid in (1, 2):
        assert p.receive(raw({**FRAMES["mut"], "id": mid}), 10.0).refusal is None  # type: ignore[union-attr]
    # A malformed mut costs a token too: refusing it is a durable write.
    assert refused_mutation(p, raw({"t": "mut", "id": 3, "ops": 1}), 10.0).code == "bad_frame"
    slow = refused(p, raw({**FRAMES["mut"], "id": 4}), 10.0)
    assert (slow.code, slow.ref, slow.retry_after) == ("rate", 4, pytest.approx(0.5))
    assert orjson.loads(encode(slow.frame())) == {
        "t": "reject",
        "mid": 4,
        "permanent": False,
        "code": "rate",
        "message": "too many mutations; retry after 0.50s",
        "retry_after": 0.5,
    }
    # Other frames cost nothing; a malformed mut during the wait is refused for now.
    assert isinstance(p.receive(raw(FRAMES["ping"]), 10.1), Ping)
    assert refused(p, raw({"t": "mut", "id": "x", "ops": []}), 10.2).code == "rate"
    assert p.receive(raw({**FRAMES["mut"], "id": 4}), 10.7).refusal is None  # type: ignore[union-attr]
    assert refused(p, raw({**FRAMES["mut"], "id": 5}), 10.7).code == "rate"


# --- frames the protocol answers with ----------------------------------------------------


def test_welcome_answers_one_hello() -> None:
    p = ServerProtocol()
    with pytest.raises(ProtocolMisuse, match="none was received"):
        p.welcome("e", "e.4", 0)
    p.receive(raw(HELLO), 0.0)
    assert orjson.loads(encode(p.welcome("e", "e.4", 2))) == {
        "t": "welcome",
        "v": 1,
        "client": "tab-0001abcd",
        "epoch": "e",
        "head": "e.4",
        "last": 2,
    }
    with pytest.raises(ProtocolMisuse, match="already sent"):
        p.welcome("e", "e.4", 2)


def test_pings_and_pongs_carry_n_only_when_there_is_one() -> None:
    assert encode_text(ServerProtocol.pong(Ping(None))) == '{"t":"pong"}'
    assert encode_text(ServerProtocol.pong(Ping(7))) == '{"t":"pong","n":7}'
    assert encode_text(ServerProtocol.ping()) == '{"t":"ping"}'


def test_error_frames() -> None:
    error = ProtocolError("bad_state", "send hello before mut", ref=3)
    assert orjson.loads(encode(error.frame())) == {
        "t": "error",
        "code": "bad_state",
        "message": "send hello before mut",
        "ref": 3,
    }
    assert orjson.loads(encode(ProtocolError("bad_json", "no").frame())) == {
        "t": "error",
        "code": "bad_json",
        "message": "no",
    }
    internal = orjson.loads(encode(ServerProtocol.internal_error()))
    assert internal == {"t": "error", "code": "internal", "message": "internal error"}


def test_acks_and_rejects() -> None:
    applied = Ack(1, "applied", seq=9, results=[OpResult()], replay=True)
    assert orjson.loads(encode(ServerProtocol.ack(applied))) == {
        "t": "ack",
        "mid": 1,
        "status": "applied",
        "seq": 9,
        "results": [{"status": "applied"}],
        "replay": True,
    }
    rejected = Ack(2, "rejected", error={"code": "not_found", "message": "no", "id": "c1"})
    assert orjson.loads(encode(ServerProtocol.ack(rejected))) == {
        "t": "reject",
        "mid": 2,
        "permanent": True,
        "code": "not_found",
        "message": "no",
        "id": "c1",
    }


def test_rate_refusals_in_a_row_say_when_there_is_room_for_all_of_them() -> None:
    """A client that resends every refused mutation after the longest retry_after finds
    room for all of them: no second round of refusals (the pacing docs/protocol.md
    describes)."""
    p = in_state(State.READY, Limits(mutations_per_second=10, mutation_burst=3))
    for mid in (1, 2, 3):
        assert p.receive(raw({**FRAMES["mut"], "id": mid}), 0.0).refusal is None  # type: ignore[union-attr]
    waits = [refused(p, raw({**FRAMES["mut"], "id": mid}), 0.0).retry_after for mid in (4, 5, 6)]
    assert waits == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]
    later = 0.0 + max(w for w in waits if w is not None)
    for mid in (4, 5, 6):
        assert p.receive(raw({**FRAMES["mut"], "id": mid}), later).refusal is None  # type: ignore[union-attr]


def test_a_mut_before_hello_is_out_of_order_however_malformed_or_large() -> None:
    p = ServerProtocol(Limits(max_frame_bytes=1000))
    for frame in (
        {"t": "mut", "id": 4, "ops": [], "extra": 1},
        {"t": "mut", "id": 4, "ops": ["x" * 2000]},
    ):
        error = refused(p, raw(frame))
        assert (error.code, str(error), error.ref) == ("bad_state", "send hello before mut", 4)


def test_the_fan_out_fast_path_builds_the_changes_frame_the_struct_defines() -> None:
    from syncline.protocol.frames import (
        ChangesFrame,
        changes_text,
        decode_server_frame,
        encode_item,
    )

    items = {'q"1': [{"k": "remove", "c": "cards", "id": "c1"}], "q2": []}
    text = changes_text("e", 4, 7, {q: [encode_item(i) for i in v] for q, v in items.items()})
    frame = ChangesFrame(from_="e.4", to="e.7", q=items)
    assert orjson.loads(text) == orjson.loads(encode(frame))
    assert decode_server_frame(text) == frame


def test_decode_server_frame_refuses_what_a_client_cannot_use() -> None:
    from syncline.protocol.frames import AckFrame, decode_server_frame

    ack = decode_server_frame('{"t":"ack","mid":1,"status":"applied","seq":null,"new":1}')
    assert ack == AckFrame(mid=1, status="applied", seq=None)  # unknown fields ignored
    for data, code in (
        ("{nope", "bad_json"),
        ('{"t":"hug"}', "unknown_frame"),
        ('{"t":"ack","mid":"1","status":"applied","seq":null}', "bad_frame"),
        ('{"t":"ack","mid":1,"status":"applied"}', "bad_frame"),  # seq is required
    ):
        with pytest.raises(ProtocolError) as info:
            decode_server_frame(data)
        assert info.value.code == code, data
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_server_frame('{"t":"ping"}', max_bytes=4)


@pytest.mark.parametrize("text", ["0:", "[1] x", '"a" "b"'])
def test_a_json_value_with_trailing_garbage_is_bad_json_not_a_crash(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(text.encode(), Limits())
    assert info.value.code == "bad_json" and "trailing characters" in str(info.value)
