"""The append service: one validation path and one answer shape for every entry point.

HTTP, the Kafka ingest consumer, the CLI and Python callers all hand raw events (decoded JSON or
JSON text) to `LedgerService.append`. Each event is first checked on its own (`parse_event`), then
the store decides it against what is stored. The answer lists what was appended, what was a
duplicate, and what was rejected with its code, field and message.

Atomic batches (HTTP, the Python client by default) are all-or-nothing: when anything is rejected
nothing is appended, and the answer still lists every rejection, because the valid rest of the batch
is checked too (as a validate-only unit). Non-atomic batches (the CLI, ingest) treat each event as
its own unit, so one bad line does not hold back the others; they still share one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ledger import metrics
from ledger.contract import ProposedEvent, parse_event
from ledger.decide import Accepted, Duplicate, Outcome, Refused
from ledger.errors import Rejection, RejectionCode
from ledger.store import EventStore, Unit, append_batch_events_max


@dataclass
class AppendReport:
    appended: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def as_json(self) -> dict[str, Any]:
        return {"appended": self.appended, "duplicates": self.duplicates, "rejected": self.rejected}

    def extend(self, other: AppendReport) -> None:
        self.appended.extend(other.appended)
        self.duplicates.extend(other.duplicates)
        self.rejected.extend(other.rejected)


def _raw_id(raw: Any) -> str | None:
    if isinstance(raw, dict):
        value = raw.get("id")
        return value if isinstance(value, str) else None
    return None


def _rejected(index: int, event_id: str | None, rejection: Rejection) -> dict[str, Any]:
    return {"index": index, "id": event_id, **rejection.as_json()}


@dataclass(frozen=True, slots=True)
class _Parsed:
    index: int
    event: ProposedEvent


def parse_all(raw_events: Sequence[Any]) -> tuple[list[_Parsed], list[dict[str, Any]]]:
    """Stateless checks for a batch. Raw items may be decoded JSON or JSON text (bytes or str)."""
    parsed: list[_Parsed] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_events):
        if isinstance(raw, bytes | str):
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                rejection = Rejection(
                    RejectionCode.malformed_json, "", f"is not valid JSON: {error}"
                )
                rejected.append(_rejected(index, None, rejection))
                continue
        result = parse_event(raw)
        if isinstance(result, list):
            event_id = _raw_id(raw)
            rejected.extend(_rejected(index, event_id, rejection) for rejection in result)
        else:
            parsed.append(_Parsed(index, result))
    return parsed, rejected


def _report_outcome(report: AppendReport, index: int, outcome: Outcome) -> None:
    match outcome:
        case Accepted():
            report.appended.append(
                {
                    "index": index,
                    "id": outcome.event.event_id,
                    "position": outcome.position,
                    "stream_version": outcome.stream_version,
                }
            )
        case Duplicate():
            report.duplicates.append(
                {"index": index, "id": outcome.event_id, "position": outcome.position}
            )
        case Refused():
            if outcome.rejection.code is not RejectionCode.batch_rejected:
                report.rejected.append(_rejected(index, outcome.event_id, outcome.rejection))


class LedgerService:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def append(self, raw_events: Sequence[Any], *, atomic: bool = True) -> AppendReport:
        with metrics.append_seconds.time():
            parsed, rejected = parse_all(raw_events)
            return await self.append_parsed(parsed, rejected, atomic=atomic)

    async def append_parsed(
        self, parsed: list[_Parsed], rejected: list[dict[str, Any]], *, atomic: bool
    ) -> AppendReport:
        report = AppendReport(rejected=list(rejected))
        if not parsed:
            for entry in report.rejected:
                metrics.rejections.labels(code=str(entry["code"])).inc()
            return report
        if atomic:
            unit = Unit([item.event for item in parsed], validate_only=bool(rejected))
            outcomes = (await self.store.append([unit]))[0]
            for item, outcome in zip(parsed, outcomes, strict=True):
                _report_outcome(report, item.index, outcome)
            if rejected:
                # Validate-only: nothing was stored, so nothing may be reported as appended.
                report.appended.clear()
        else:
            for start in range(0, len(parsed), append_batch_events_max):
                chunk = parsed[start : start + append_batch_events_max]
                results = await self.store.append([Unit([item.event]) for item in chunk])
                for item, outcomes in zip(chunk, results, strict=True):
                    _report_outcome(report, item.index, outcomes[0])
        report.rejected.sort(key=lambda entry: entry["index"])
        metrics.events_appended.inc(len(report.appended))
        metrics.events_duplicate.inc(len(report.duplicates))
        for entry in report.rejected:
            metrics.rejections.labels(code=str(entry["code"])).inc()
        return report
