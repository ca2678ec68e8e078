"""The in-memory event store: the same decisions as PostgreSQL, for tests and embedding."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ledger.decide import Accepted, Outcome, PositionCounter, TenantState, decide_unit
from ledger.errors import invariant
from ledger.store import RecordedEvent, Unit, read_limit_max


class MemoryEventStore:
    def __init__(self) -> None:
        self._events: list[RecordedEvent] = []
        self._state: dict[str, TenantState] = {}
        self._lock = asyncio.Lock()

    async def append(self, units: list[Unit]) -> list[list[Outcome]]:
        async with self._lock:
            positions = PositionCounter(len(self._events))
            results = [
                decide_unit(self._state, unit.events, positions, validate_only=unit.validate_only)
                for unit in units
            ]
            recorded_at = datetime.now(UTC)
            for outcomes in results:
                for outcome in outcomes:
                    if isinstance(outcome, Accepted):
                        invariant(
                            outcome.position == len(self._events) + 1,
                            "accepted positions must continue the head without a gap",
                        )
                        self._events.append(_record(outcome, recorded_at))
            return results

    async def read(
        self, tenant_id: str | None, from_position: int = 1, limit: int = 1000
    ) -> list[RecordedEvent]:
        limit = max(0, min(limit, read_limit_max))
        if limit == 0:  # as PostgreSQL's LIMIT 0: nothing, not everything
            return []
        selected = []
        for event in self._events[max(from_position, 1) - 1 :]:
            if tenant_id is None or event.tenant_id == tenant_id:
                selected.append(event)
                if len(selected) == limit:
                    break
        return selected

    async def head(self) -> int:
        return len(self._events)

    async def close(self) -> None:
        return None


def _record(outcome: Accepted, recorded_at: datetime) -> RecordedEvent:
    event = outcome.event
    return RecordedEvent(
        position=outcome.position,
        tenant_id=event.tenant_id,
        stream_id=event.stream_id,
        stream_version=outcome.stream_version,
        event_id=event.event_id,
        type=event.type,
        time=event.time,
        recorded_at=recorded_at,
        data=event.data,
        metadata=outcome.metadata,
        hash=event.content_hash,
    )
