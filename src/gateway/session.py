"""One websocket client's session, as a pure state machine: no sockets, no Redis, no clock.

The server feeds it what happens (a text frame from the client, a KPI state published through
Redis, a state loaded for a snapshot) and asks it for what to do (actions) and what to send
(`take`). Everything the protocol promises (DESIGN section 8) is decided here:

- a client may only subscribe to its token's tenant (the system token `*` to any): another tenant
  gets an error frame and nothing of that tenant is ever queued;
- the first frame of a subscription is a `snapshot`, then `kpi:update` frames with growing `seq`;
  a state older than (or as old as) what the client has is never sent;
- `"since": seq` on subscribe: no snapshot when the client already has that seq, a fresh snapshot
  otherwise (it missed something, or Redis was reset and seq started again). With `"position"` too
  (the `position` of the state it has), the seq must also be that state's: after a Redis reset
  the numbering starts again and the same seq can name another state;
- coalescing: at most one state per subscription waits to be sent, the newest. A slow client skips
  states, never receives an old one, and never holds more than one state per subscription in
  memory. A skipped seq is therefore normal: every frame carries the whole state.

Frames sent by the client are JSON objects:
    {"type": "subscribe", "channel": "kpi:update", "tenant": "acme", "since": 41, "position": 1234}
    {"type": "unsubscribe", "channel": "kpi:update", "tenant": "acme"}
Errors come back as {"type": "error", "code", "field", "message"} (codes in `ErrorCode`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import orjson

from ledger.auth import may_act_for
from ledger.contract import tenant_pattern

kpi_channel = "kpi:update"
channels = frozenset({kpi_channel})
# A dashboard shows one tenant; the system token may watch a few side by side. Each subscription
# costs one pending state at most, so the limit bounds a client's memory.
subscriptions_per_client_max = 16
# Error frames waiting to be sent; a client that provokes more without reading them is closed.
errors_pending_max = 16


class ErrorCode(enum.StrEnum):
    """Why a client frame was refused, in the order the checks run."""

    not_json = "not_json"
    not_an_object = "not_an_object"
    unknown_type = "unknown_type"
    unknown_channel = "unknown_channel"
    tenant_invalid = "tenant_invalid"
    tenant_forbidden = "tenant_forbidden"
    since_invalid = "since_invalid"
    too_many_subscriptions = "too_many_subscriptions"
    snapshot_unavailable = "snapshot_unavailable"


@dataclass(frozen=True)
class KpiState:
    """One published KPI state of a tenant, parsed once per gateway process and shared by every
    session: `update` and `snapshot` are the ready-to-send frames (UTF-8 JSON)."""

    tenant: str
    seq: int
    position: int
    update: bytes
    snapshot: bytes

    @classmethod
    def from_message(cls, message: bytes) -> KpiState:
        """A message as published (`projections.live`): a JSON object with type kpi:update."""
        body = orjson.loads(message)
        if not isinstance(body, dict):
            raise ValueError("a KPI message must be a JSON object")
        tenant, seq, position = body.get("tenant"), body.get("seq"), body.get("position")
        if not isinstance(tenant, str) or not isinstance(seq, int) or not isinstance(position, int):
            raise ValueError("a KPI message needs tenant (string), seq and position (integers)")
        body["type"] = kpi_channel
        update = orjson.dumps(body)
        body["type"] = "snapshot"
        return cls(tenant, seq, position, update, orjson.dumps(body))

    def newer_than(self, other: KpiState | None) -> bool:
        """A higher seq, or a further read-model position under a lower seq: Redis lost its
        states and numbers from 1 again, and this state is still newer than what was sent."""
        return other is None or self.seq > other.seq or self.position > other.position

    def restarts_seq(self, other: KpiState | None) -> bool:
        return other is not None and self.seq <= other.seq


# What the session asks the server to do.
@dataclass(frozen=True)
class Subscribe:
    """Start receiving the tenant's states (a Redis subscription) and load its current state."""

    tenant: str


@dataclass(frozen=True)
class Unsubscribe:
    tenant: str


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Action = Subscribe | Unsubscribe | Close

close_policy_violation = 1008


@dataclass
class _Subscription:
    since: int | None
    # The position of the state the client has, when it said (with since).
    since_position: int | None = None
    # The last state queued or sent; None until the snapshot went out.
    sent: KpiState | None = None
    # The newest state received while the snapshot was being loaded.
    early: KpiState | None = None
    loaded: bool = False


def _next_kind(subscription: _Subscription, state: KpiState) -> str | None:
    """How a published state goes to a loaded subscription, recording it as sent: None for a
    duplicate or an older state (never sent); a snapshot when seq starts again (Redis lost its
    states), so the client knows the numbering restarted; else an update."""
    if not state.newer_than(subscription.sent):
        return None
    kind = "snapshot" if state.restarts_seq(subscription.sent) else "update"
    subscription.sent = state
    return kind


@dataclass
class Session:
    """A client's session. `token_tenant` is the verified `tenant` claim of its token."""

    token_tenant: str
    _subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    # tenant -> (frame kind, state): the newest state waiting to be sent, one per subscription.
    _pending: dict[str, tuple[str, KpiState]] = field(default_factory=dict)
    _errors: list[bytes] = field(default_factory=list)

    @property
    def tenants(self) -> list[str]:
        return list(self._subscriptions)

    def has_pending(self) -> bool:
        return bool(self._pending or self._errors)

    def receive(self, text: str | bytes) -> list[Action]:
        """A frame from the client."""
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._error(ErrorCode.not_json, "", "a frame must be a JSON object")
        if not isinstance(message, dict):
            return self._error(ErrorCode.not_an_object, "", "a frame must be a JSON object")
        kind = message.get("type")
        if not isinstance(kind, str) or kind not in ("subscribe", "unsubscribe"):
            return self._error(
                ErrorCode.unknown_type, "type", f"{kind!r} is not subscribe or unsubscribe"
            )
        channel = message.get("channel")
        if not isinstance(channel, str) or channel not in channels:  # a list is unhashable
            return self._error(
                ErrorCode.unknown_channel,
                "channel",
                f"{channel!r} is not one of {sorted(channels)}",
            )
        tenant = message.get("tenant", self.token_tenant)
        if not isinstance(tenant, str) or not tenant_pattern.fullmatch(tenant) or tenant == "*":
            return self._error(ErrorCode.tenant_invalid, "tenant", f"{tenant!r} is not a tenant id")
        if not may_act_for(self.token_tenant, tenant):
            return self._error(
                ErrorCode.tenant_forbidden, "tenant", "the token does not allow that tenant"
            )
        if kind == "unsubscribe":
            return self._unsubscribe(tenant)
        since = message.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            return self._error(ErrorCode.since_invalid, "since", "since must be an integer seq")
        position = message.get("position")
        if position is not None and (
            not isinstance(position, int) or isinstance(position, bool) or position < 0
        ):
            return self._error(
                ErrorCode.since_invalid, "position", "position must be an integer >= 0"
            )
        return self._subscribe(tenant, since, position)

    def _subscribe(self, tenant: str, since: int | None, position: int | None) -> list[Action]:
        if tenant in self._subscriptions:
            # A repeated subscribe is a request for a fresh snapshot (or a resume check).
            self._subscriptions[tenant] = _Subscription(since, position)
            self._pending.pop(tenant, None)
            return [Subscribe(tenant)]
        if len(self._subscriptions) >= subscriptions_per_client_max:
            return self._error(
                ErrorCode.too_many_subscriptions,
                "tenant",
                f"at most {subscriptions_per_client_max} subscriptions per connection",
            )
        self._subscriptions[tenant] = _Subscription(since, position)
        return [Subscribe(tenant)]

    def _unsubscribe(self, tenant: str) -> list[Action]:
        if self._subscriptions.pop(tenant, None) is None:
            return []
        self._pending.pop(tenant, None)
        return [Unsubscribe(tenant)]

    def loaded(self, state: KpiState | None) -> None:
        """The current state of a tenant this session asked for (None: it could not be had)."""
        if state is None:
            return
        subscription = self._subscriptions.get(state.tenant)
        if subscription is None or subscription.loaded:
            return
        subscription.loaded = True
        newest = state
        if subscription.early is not None and subscription.early.newer_than(state):
            newest = subscription.early
        subscription.early = None
        subscription.sent = newest
        if subscription.since == newest.seq and subscription.since_position in (
            None,
            newest.position,
        ):
            return  # the client has that state already: nothing to resend
        self._pending[state.tenant] = ("snapshot", newest)

    def unavailable(self, tenant: str, reason: str) -> None:
        """The state could not be loaded; updates still come when the tenant changes."""
        if tenant in self._subscriptions:
            self._error(ErrorCode.snapshot_unavailable, "tenant", reason)

    def published(self, state: KpiState) -> None:
        """A state published for a tenant (fan-out from Redis)."""
        subscription = self._subscriptions.get(state.tenant)
        if subscription is None:
            return
        if not subscription.loaded:
            if state.newer_than(subscription.early):
                subscription.early = state
            return
        kind = _next_kind(subscription, state)
        if kind is None:
            return
        # Anything replacing a snapshot not yet sent goes out as the snapshot.
        pending_kind = self._pending[state.tenant][0] if state.tenant in self._pending else None
        self._pending[state.tenant] = ("snapshot" if pending_kind == "snapshot" else kind, state)

    def send_now(self, state: KpiState) -> bytes | None:
        """The fan-out's fast path, for a client whose socket keeps up: the frame to write at once
        for a published state, or None (nothing to send, or it went to the queue: anything
        already waiting goes first, through `take`). Same decisions as `published`."""
        subscription = self._subscriptions.get(state.tenant)
        if subscription is None or not subscription.loaded or self._pending or self._errors:
            self.published(state)
            return None
        kind = _next_kind(subscription, state)
        if kind is None:
            return None
        return state.snapshot if kind == "snapshot" else state.update

    def take(self) -> list[bytes]:
        """Everything to send now, in order: errors first, then the newest state per tenant."""
        frames = self._errors
        self._errors = []
        for kind, state in self._pending.values():
            frames.append(state.snapshot if kind == "snapshot" else state.update)
        self._pending.clear()
        return frames

    def _error(self, code: ErrorCode, field_name: str, message: str) -> list[Action]:
        if len(self._errors) >= errors_pending_max:
            return [Close(close_policy_violation, "too many refused frames")]
        frame = {"type": "error", "code": code.value, "field": field_name, "message": message}
        self._errors.append(orjson.dumps(frame))
        return []
