"""The event store: one interface, two backends (in memory, PostgreSQL), one contract test suite.

An append takes *units*: lists of events that are accepted or refused together. Concurrent callers
share one transaction (group commit) but never each other's fate: a refused unit leaves no trace.
Positions are global, gap-free and assigned in commit order (see `ledger.store.postgres` for why
that holds under concurrent writers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ledger.contract import ProposedEvent
from ledger.decide import Outcome

# One transaction holds at most this many events: large enough that COPY-sized batches amortise
# the lock and the commit, small enough that the lock is never held for long (~20 ms at 50k/s).
append_batch_events_max = 5000
# Reads return at most this many events per call; callers page with from_position.
read_limit_max = 10_000
# The largest position (PostgreSQL's bigint): what a query may name as a position or a limit.
position_max = 2**63 - 1


def whole_number(text: str) -> int | None:
    """A position or a limit written in a query: ASCII digits up to `position_max`, else None.
    (`str.isdigit` also takes "²", which `int` refuses; past bigint nothing can be stored, looked
    up or answered.)"""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= position_max else None


@dataclass(frozen=True, slots=True)
class Unit:
    events: list[ProposedEvent]
    validate_only: bool = False


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: int
    tenant_id: str
    stream_id: str
    stream_version: int
    event_id: str
    type: str
    time: datetime
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    hash: str

    def as_json(self) -> dict[str, Any]:
        """The stored event as a CloudEvent (structured mode) with the store's own attributes."""
        cloud_event: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.event_id,
            "source": self.metadata.get("source", ""),
            "type": self.type,
            "subject": self.stream_id,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "tenantid": self.tenant_id,
            "datacontenttype": "application/json",
            "data": self.data,
            "position": self.position,
            "streamversion": self.stream_version,
            "recordedat": self.recorded_at.isoformat().replace("+00:00", "Z"),
            "hash": self.hash,
        }
        if "ledger" in self.metadata:
            cloud_event["ledger"] = self.metadata["ledger"]
        return cloud_event


class EventStore(Protocol):
    async def append(self, units: list[Unit]) -> list[list[Outcome]]:
        """Decide and append each unit; the answer has one outcome per event, in order."""
        ...

    async def read(
        self, tenant_id: str | None, from_position: int = 1, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Events with position >= from_position, in position order; tenant None means all. At
        most `limit` of them, and possibly fewer while more follow (a store may end a page at a
        size in bytes, as PostgreSQL's does at `page_bytes_max`): only an empty page means that
        nothing follows."""
        ...

    async def head(self) -> int:
        """The highest committed position (0 when empty)."""
        ...

    async def close(self) -> None: ...
