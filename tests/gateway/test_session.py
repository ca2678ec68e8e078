"""The gateway's session logic, fed messages with no socket: a client only ever gets its token's
tenant, a snapshot first and then only newer states, one pending state per subscription however
slow it is, the right answer to `since` on resume, and every bad frame refused with a code and the
field, changing nothing."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.session import (
    Close,
    ErrorCode,
    KpiState,
    Session,
    Subscribe,
    Unsubscribe,
    errors_pending_max,
    subscriptions_per_client_max,
)
from tests.strategies import json_values


def state(tenant: str, seq: int, position: int | None = None, ar: str = "0.00") -> KpiState:
    message = {
        "seq": seq,
        "updated_at": "2026-11-23T10:00:00.000Z",
        "type": "kpi:update",
        "channel": "kpi:update",
        "tenant": tenant,
        "position": seq * 10 if position is None else position,
        "as_of": "2026-11-23",
        "currency": "USD",
        "kpis": {"ar": ar},
        "alerts": [],
    }
    return KpiState.from_message(orjson.dumps(message))


def subscribe(tenant: str = "acme", **extra: Any) -> bytes:
    return orjson.dumps({"type": "subscribe", "channel": "kpi:update", "tenant": tenant, **extra})


def frames(session: Session) -> list[dict[str, Any]]:
    return [orjson.loads(frame) for frame in session.take()]


def subscribed(tenant: str = "acme", loaded_seq: int = 1) -> Session:
    session = Session(tenant)
    assert session.receive(subscribe(tenant)) == [Subscribe(tenant)]
    session.loaded(state(tenant, loaded_seq))
    return session


def test_snapshot_first_then_only_newer_updates() -> None:
    session = subscribed(loaded_seq=3)
    [snapshot] = frames(session)
    assert (snapshot["type"], snapshot["seq"], snapshot["position"]) == ("snapshot", 3, 30)
    assert snapshot["kpis"] == {"ar": "0.00"} and snapshot["channel"] == "kpi:update"
    session.published(state("acme", 3))  # the same state again
    session.published(state("acme", 2))  # an older one, late
    assert frames(session) == []
    session.published(state("acme", 4, ar="120.00"))
    [update] = frames(session)
    assert (update["type"], update["seq"], update["kpis"]) == ("kpi:update", 4, {"ar": "120.00"})


def test_another_tenant_is_refused_and_nothing_of_it_is_queued() -> None:
    session = Session("acme")
    assert session.receive(subscribe("globex")) == []
    [error] = frames(session)
    assert error == {
        "type": "error",
        "code": "tenant_forbidden",
        "field": "tenant",
        "message": "the token does not allow that tenant",
    }
    session.loaded(state("globex", 1))
    session.published(state("globex", 2))
    assert frames(session) == [] and session.tenants == []


def test_the_system_token_may_watch_any_tenant() -> None:
    session = Session("*")
    assert session.receive(subscribe("globex")) == [Subscribe("globex")]
    assert session.receive(subscribe("acme")) == [Subscribe("acme")]
    session.loaded(state("acme", 1))
    session.loaded(state("globex", 5))
    assert [(f["tenant"], f["seq"]) for f in frames(session)] == [("acme", 1), ("globex", 5)]


def test_a_slow_client_holds_only_the_newest_state() -> None:
    session = subscribed(loaded_seq=1)
    frames(session)
    for seq in range(2, 50):
        session.published(state("acme", seq))
    [update] = frames(session)
    assert (update["type"], update["seq"]) == ("kpi:update", 49)


def test_a_newer_state_replacing_an_unsent_snapshot_stays_a_snapshot() -> None:
    session = subscribed(loaded_seq=1)
    session.published(state("acme", 2))
    [frame] = frames(session)
    assert (frame["type"], frame["seq"]) == ("snapshot", 2)


def test_states_published_while_the_snapshot_loads_are_not_lost() -> None:
    session = Session("acme")
    session.receive(subscribe())
    session.published(state("acme", 7))
    session.published(state("acme", 6))
    assert frames(session) == []  # nothing before the snapshot
    session.loaded(state("acme", 5))  # loaded before 6 and 7 were published
    [frame] = frames(session)
    assert (frame["type"], frame["seq"]) == ("snapshot", 7)


@pytest.mark.parametrize(("since", "expected"), [(9, []), (8, [9]), (12, [9]), (0, [9])])
def test_resume_with_since(since: int, expected: list[int]) -> None:
    """No snapshot when the client has the current seq; a fresh one when it missed something or
    when its seq is ahead (Redis was reset and numbers again)."""
    session = Session("acme")
    session.receive(subscribe(since=since))
    session.loaded(state("acme", 9))
    sent = frames(session)
    assert [f["seq"] for f in sent] == expected
    assert all(f["type"] == "snapshot" for f in sent)
    session.published(state("acme", 10))
    assert [(f["type"], f["seq"]) for f in frames(session)] == [("kpi:update", 10)]


@pytest.mark.parametrize(("position", "expected"), [(90, []), (None, []), (1234, [9]), (0, [9])])
def test_resume_with_since_and_position(position: int | None, expected: list[int]) -> None:
    """After a Redis reset the numbering starts again, so the seq a client resumes from can name
    another state now: with the position of the state it has, a mismatch gets a snapshot."""
    session = Session("acme")
    extra = {} if position is None else {"position": position}
    session.receive(subscribe(since=9, **extra))
    session.loaded(state("acme", 9, position=90))
    assert [(f["type"], f["seq"]) for f in frames(session)] == [("snapshot", 9)] * len(expected)


def test_a_seq_that_starts_again_with_newer_data_comes_as_a_snapshot() -> None:
    session = subscribed(loaded_seq=40)
    frames(session)
    session.published(state("acme", 1, position=401))  # Redis lost its states
    [frame] = frames(session)
    assert (frame["type"], frame["seq"], frame["position"]) == ("snapshot", 1, 401)
    session.published(state("acme", 2, position=402))
    assert [(f["type"], f["seq"]) for f in frames(session)] == [("kpi:update", 2)]


def test_unsubscribe_stops_updates() -> None:
    session = subscribed()
    frames(session)
    unsubscribe = {"type": "unsubscribe", "channel": "kpi:update", "tenant": "acme"}
    assert session.receive(orjson.dumps(unsubscribe)) == [Unsubscribe("acme")]
    session.published(state("acme", 2))
    assert frames(session) == [] and session.tenants == []


def test_an_unavailable_snapshot_is_said_and_updates_still_come() -> None:
    session = Session("acme")
    session.receive(subscribe())
    session.unavailable("acme", "the current state could not be loaded; retry")
    assert [f["code"] for f in frames(session)] == ["snapshot_unavailable"]
    session.loaded(state("acme", 3))
    assert [(f["type"], f["seq"]) for f in frames(session)] == [("snapshot", 3)]


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        (b"{not json", ErrorCode.not_json, ""),
        (b"[1, 2]", ErrorCode.not_an_object, ""),
        (b'{"type": "publish", "channel": "kpi:update"}', ErrorCode.unknown_type, "type"),
        (b'{"type": "subscribe", "channel": "gl:update"}', ErrorCode.unknown_channel, "channel"),
        # Unhashable: the set lookup raised TypeError and the connection dropped.
        (b'{"type": "subscribe", "channel": []}', ErrorCode.unknown_channel, "channel"),
        (b'{"type": "subscribe", "channel": {}}', ErrorCode.unknown_channel, "channel"),
        (b'{"type": ["subscribe"], "channel": "kpi:update"}', ErrorCode.unknown_type, "type"),
        (
            b'{"type": "subscribe", "channel": "kpi:update", "tenant": "a b"}',
            ErrorCode.tenant_invalid,
            "tenant",
        ),
        (
            b'{"type": "subscribe", "channel": "kpi:update", "tenant": 7}',
            ErrorCode.tenant_invalid,
            "tenant",
        ),
        (
            b'{"type": "subscribe", "channel": "kpi:update", "tenant": "acme", "since": "x"}',
            ErrorCode.since_invalid,
            "since",
        ),
        (
            b'{"type": "subscribe", "channel": "kpi:update", "tenant": "acme", "since": true}',
            ErrorCode.since_invalid,
            "since",
        ),
        (
            b'{"type": "subscribe", "channel": "kpi:update", "since": 3, "position": -1}',
            ErrorCode.since_invalid,
            "position",
        ),
        (
            b'{"type": "subscribe", "channel": "kpi:update", "since": 3, "position": "12"}',
            ErrorCode.since_invalid,
            "position",
        ),
    ],
)
def test_bad_frames_are_refused_by_code_and_field_and_change_nothing(
    frame: bytes, code: ErrorCode, field: str
) -> None:
    session = subscribed()
    frames(session)
    assert session.receive(frame) == []
    [error] = frames(session)
    assert (error["type"], error["code"], error["field"]) == ("error", code.value, field)
    assert error["message"]
    assert session.tenants == ["acme"]
    session.published(state("acme", 2))
    assert [f["seq"] for f in frames(session)] == [2]


def test_the_tenant_defaults_to_the_token_s() -> None:
    session = Session("acme")
    assert session.receive(b'{"type": "subscribe", "channel": "kpi:update"}') == [Subscribe("acme")]


def test_subscriptions_are_limited() -> None:
    session = Session("*")
    for number in range(subscriptions_per_client_max):
        assert session.receive(subscribe(f"t{number}")) == [Subscribe(f"t{number}")]
    assert session.receive(subscribe("one-more")) == []
    assert [f["code"] for f in frames(session)] == ["too_many_subscriptions"]
    assert len(session.tenants) == subscriptions_per_client_max


def test_a_client_that_keeps_sending_bad_frames_is_closed() -> None:
    session = Session("acme")
    for _ in range(errors_pending_max):
        assert session.receive(b"nope") == []
    [action] = session.receive(b"nope")
    assert isinstance(action, Close) and action.code == 1008


def test_a_published_message_must_be_a_kpi_state() -> None:
    with pytest.raises(ValueError, match="tenant"):
        KpiState.from_message(b'{"seq": "1", "tenant": "acme", "position": 1}')
    with pytest.raises(ValueError, match="object"):
        KpiState.from_message(b"[]")


def test_the_fast_path_decides_as_the_queue_does() -> None:
    """`send_now` (a client whose socket keeps up) gives the frame to write at once; anything
    already waiting keeps its place: the state then goes to the queue."""
    session = subscribed(loaded_seq=1)
    assert session.send_now(state("acme", 2)) is None  # the snapshot still waits: queued
    assert [(f["type"], f["seq"]) for f in frames(session)] == [("snapshot", 2)]
    frame = session.send_now(state("acme", 3))
    assert frame is not None and orjson.loads(frame)["seq"] == 3
    assert session.send_now(state("acme", 3)) is None and session.send_now(state("acme", 1)) is None
    restarted = session.send_now(state("acme", 1, position=999))
    assert restarted is not None and orjson.loads(restarted)["type"] == "snapshot"
    assert session.send_now(state("globex", 9)) is None and frames(session) == []


_json = json_values("subscribe", "unsubscribe", "kpi:update", "acme", "globex", "*")
_frames = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"type": _json, "channel": _json},
        optional={"tenant": _json, "since": _json, "position": _json},
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "unsubscribe"]), "channel": st.just("kpi:update")},
        optional={"tenant": _json, "since": _json, "position": _json},
    ),
)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(["acme", "*"]), st.lists(_frames, min_size=1, max_size=4))
def test_no_frame_raises(token: str, sent: list[Any]) -> None:
    """Any JSON a client sends is answered (an action or an error frame), never an exception: a
    list as the channel once raised TypeError and dropped the connection."""
    session = Session(token)
    for frame in sent:
        session.receive(json.dumps(frame))
    for error in frames(session):
        assert error["type"] in ("error", "snapshot", "kpi:update"), error
