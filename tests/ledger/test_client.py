"""The Python client against a real HTTP API and PostgreSQL store: appends, duplicates, a rejected
batch raises with every rejection named and nothing stored, and listing pages by position."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from ledger.api import make_app
from ledger.client import LedgerClient, RejectedBatchError, new_event
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from tests.ledger.events import new_tenant


@pytest.fixture
async def ledger_client(database_url: str) -> AsyncIterator[LedgerClient]:
    store = await PostgresEventStore.open(database_url)
    server = TestServer(make_app(LedgerService(store)))
    await server.start_server()
    async with LedgerClient(str(server.make_url(""))) as client:
        yield client
    await server.close()
    await store.close()


async def test_client_appends_and_reads_back(ledger_client: LedgerClient) -> None:
    tenant = new_tenant()
    registered = new_event(tenant, "customer.registered", {"customer_id": "C1", "name": "Acme"})
    answer = await ledger_client.append([registered])
    assert [entry["id"] for entry in answer["appended"]] == [registered["id"]]
    position = answer["appended"][0]["position"]

    again = await ledger_client.append([registered])
    assert again == {"appended": [], "duplicates": [{"id": registered["id"], "position": position}]}

    stored = await ledger_client.events(tenant)
    assert [(event["id"], event["position"], event["data"]) for event in stored] == [
        (registered["id"], position, {"customer_id": "C1", "name": "Acme"})
    ]


async def test_client_raises_on_a_rejected_batch_and_nothing_is_stored(
    ledger_client: LedgerClient,
) -> None:
    tenant = new_tenant()
    batch = [
        new_event(tenant, "customer.registered", {"customer_id": "C1", "name": "Acme"}),
        new_event(
            tenant,
            "expense.recorded",
            {
                "expense_id": "E1",
                "vendor": "AWS",
                "category": "hosting",
                "incurred_date": "2026-01-31",
                "amount": "12.345",
                "currency": "USD",
            },
        ),
    ]
    with pytest.raises(RejectedBatchError) as raised:
        await ledger_client.append(batch)
    assert [
        (entry["index"], entry["code"], entry["field"]) for entry in raised.value.answer["rejected"]
    ] == [(1, "amount_too_many_digits", "data.amount")]
    assert await ledger_client.events(tenant) == []
