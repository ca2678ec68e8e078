"""A small client for services that publish to the ledger.

    from ledger.client import LedgerClient, new_event

    async with LedgerClient("http://127.0.0.1:8080") as ledger:
        answer = await ledger.append([new_event("acme", "customer.registered",
                                                {"customer_id": "C1", "name": "Acme"})])

`LedgerClient` speaks the HTTP API. In-process callers (tests, tools, the ingest consumer) use
`ledger.service.LedgerService` over a store directly: the same validation and the same answer.
A rejected batch raises `RejectedBatchError` carrying the answer; appends are idempotent by event
id, so a call that failed in transit can simply be retried.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from ledger.contract import type_name
from ledger.errors import LedgerError, StoreUnavailableError

request_timeout_s = 30


def new_event(
    tenant: str,
    kind: str,
    data: dict[str, Any],
    *,
    event_id: str | None = None,
    source: str = "ledger-client",
    time: datetime | None = None,
    subject: str | None = None,
    expected_version: int | None = None,
) -> dict[str, Any]:
    """A CloudEvent for one of the v1 kinds, e.g. new_event("acme", "invoice.issued", {...})."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": type_name(kind),
        "time": (time or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "tenantid": tenant,
        "data": data,
    }
    if subject is not None:
        event["subject"] = subject
    if expected_version is not None:
        event["expectedversion"] = expected_version
    return event


class RejectedBatchError(LedgerError):
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        first = (answer.get("rejected") or [{}])[0]
        super().__init__(
            f"rejected: {first.get('code')} at {first.get('field')!r}: {first.get('message')}"
        )


class LedgerClient:
    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LedgerClient:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=request_timeout_s), headers=headers
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise LedgerError("use `async with LedgerClient(...)` before calling it")
        return self._session

    async def append(self, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Append an atomic batch; returns {"appended": [...], "duplicates": [...]}."""
        async with self._http().post(
            f"{self.base_url}/v1/events",
            data=orjson.dumps(list(events)),
            headers={"Content-Type": "application/cloudevents-batch+json"},
        ) as response:
            answer: dict[str, Any] = orjson.loads(await response.read())
            if response.status == 200:
                return answer
            if response.status == 503:
                raise StoreUnavailableError("the ledger's event store is unavailable; retry")
            if "rejected" in answer:
                raise RejectedBatchError(answer)
            raise LedgerError(f"HTTP {response.status}: {answer}")

    async def events(
        self, tenant: str, from_position: int = 1, limit: int = 100
    ) -> list[dict[str, Any]]:
        """A page of the tenant's events from `from_position`: at most `limit`, and fewer once
        the page is large in bytes; only an empty page means there are no more."""
        async with self._http().get(
            f"{self.base_url}/v1/events",
            params={"tenant": tenant, "from_position": from_position, "limit": limit},
        ) as response:
            answer = orjson.loads(await response.read())
            if response.status != 200:
                raise LedgerError(f"HTTP {response.status}: {answer}")
            events: list[dict[str, Any]] = answer["events"]
            return events
