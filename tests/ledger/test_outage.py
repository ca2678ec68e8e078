"""A brief PostgreSQL outage: appends fail fast with StoreUnavailableError (never hang, never half
apply), the store reconnects by itself once the server is back, and a running relay resumes and
publishes every event exactly where it left off. A private embedded server is stopped and started
again in the same folder, so no other test shares the outage."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from ledger import relay as relay_module
from ledger.embedded import EmbeddedPostgres
from ledger.errors import StoreUnavailableError
from ledger.relay import Relay
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from tests.ledger.events import customer, invoice, new_tenant
from tests.ledger.test_relay import FakePublisher, _header

recover_timeout_s = 30.0


async def _append_until_it_works(service: LedgerService, events: list[dict[str, object]]) -> int:
    deadline = time.monotonic() + recover_timeout_s
    failures = 0
    while True:
        try:
            report = await service.append(events)
            assert not report.rejected, report.rejected
            return failures
        except StoreUnavailableError:
            failures += 1
            assert time.monotonic() < deadline, "the store did not reconnect"
            await asyncio.sleep(0.2)


async def test_store_and_relay_ride_out_a_database_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "poll_interval_s", 0.2)
    folder = Path(tempfile.mkdtemp(prefix="ledger-outage-"))
    server = EmbeddedPostgres.start(folder / "data")
    store = await PostgresEventStore.open(server.url)
    service = LedgerService(store)
    broker = FakePublisher()
    relay = Relay(store, broker, topic="events")
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    tenant = new_tenant()
    try:
        await _append_until_it_works(service, [customer(tenant), invoice(tenant, "INV-1")])
        server.stop()
        with pytest.raises(StoreUnavailableError):
            await service.append([invoice(tenant, "INV-2")])
        server = EmbeddedPostgres.start(folder / "data")
        # Reads first: every pooled connection is dead, and the first read must not fail.
        assert [event.position for event in await store.read(tenant, 1, 10)] == [1, 2]
        await _append_until_it_works(service, [invoice(tenant, "INV-2"), invoice(tenant, "INV-3")])
        stored = await store.read(tenant, 1, 10)
        assert [event.data["invoice_id"] for event in stored[1:]] == ["INV-1", "INV-2", "INV-3"]
        assert [event.position for event in stored] == [1, 2, 3, 4]
        deadline = time.monotonic() + recover_timeout_s
        while relay.checkpoint < 4:
            assert time.monotonic() < deadline, f"relay stuck at {relay.checkpoint}"
            await asyncio.sleep(0.1)
        published = sorted({int(_header(m, "ce_position")) for m in broker.topics["events"]})
        assert published == [1, 2, 3, 4]
    finally:
        stop.set()
        await relaying
        await store.close()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
