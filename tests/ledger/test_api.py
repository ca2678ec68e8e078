"""The HTTP API appends and lists events through the real PostgreSQL store, and bad input of every
kind is answered with a named field and reason while the store's head stays where it was."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.api import make_app, request_events_max
from ledger.decide import Outcome
from ledger.errors import StoreUnavailableError
from ledger.service import LedgerService
from ledger.store import Unit
from ledger.store.memory import MemoryEventStore
from ledger.store.postgres import PostgresEventStore
from tests.ledger.contract_examples import example_event, examples
from tests.ledger.events import cloud_event, customer, invoice, new_tenant, payment
from tests.strategies import json_values


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    store = await PostgresEventStore.open(database_url)
    async with TestClient(TestServer(make_app(LedgerService(store)))) as test_client:
        yield test_client
    await store.close()


async def post(
    client: TestClient[Any, Any], body: Any, content_type: str = "application/json"
) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await client.post("/v1/events", data=raw, headers={"Content-Type": content_type})
    return response.status, orjson.loads(await response.read())


async def head(client: TestClient[Any, Any]) -> int:
    response = await client.get("/healthz")
    assert response.status == 200
    return int((await response.json())["head"])


async def test_single_event_and_batch_are_appended_and_listed(client: TestClient[Any, Any]) -> None:
    tenant = new_tenant()
    status, answer = await post(client, customer(tenant), "application/cloudevents+json")
    assert status == 200
    assert len(answer["appended"]) == 1 and answer["duplicates"] == []
    first = answer["appended"][0]
    assert first["stream_version"] == 1

    batch = [
        invoice(tenant, "INV-1"),
        invoice(tenant, "INV-2", amount="50.00"),
        payment(tenant, amount="120.00"),
    ]
    status, answer = await post(client, batch, "application/cloudevents-batch+json")
    assert status == 200
    positions = [entry["position"] for entry in answer["appended"]]
    assert positions == [first["position"] + 1, first["position"] + 2, first["position"] + 3]
    assert [entry["id"] for entry in answer["appended"]] == [event["id"] for event in batch]

    response = await client.get(
        "/v1/events", params={"tenant": tenant, "from_position": "1", "limit": "10"}
    )
    assert response.status == 200
    listed = (await response.json())["events"]
    assert [event["id"] for event in listed] == [
        customer_id := listed[0]["id"],
        *[e["id"] for e in batch],
    ]
    assert customer_id == listed[0]["id"]
    assert listed[3]["ledger"]["allocations"] == [
        {"invoice_id": "INV-1", "amount": "100.00"},
        {"invoice_id": "INV-2", "amount": "20.00"},
    ]
    assert listed[1]["data"]["total"] == "100.00"


async def test_resend_is_a_duplicate_and_changed_content_is_a_conflict(
    client: TestClient[Any, Any],
) -> None:
    tenant = new_tenant()
    event = customer(tenant)
    status, first = await post(client, event)
    assert status == 200
    status, again = await post(client, event)
    assert status == 200
    assert again == {
        "appended": [],
        "duplicates": [{"id": event["id"], "position": first["appended"][0]["position"]}],
    }
    changed = dict(event, data={"customer_id": "C1", "name": "Someone Else"})
    before = await head(client)
    status, answer = await post(client, changed)
    assert status == 422
    assert answer["rejected"][0]["code"] == "exists_with_different_content"
    assert answer["rejected"][0]["field"] == "id"
    assert await head(client) == before


def _bad_inputs(tenant: str) -> list[tuple[str, Any, str, str]]:
    """(case, body, expected code, expected field) for one-event bodies."""
    good_invoice = invoice(tenant, "INV-9")
    float_money = invoice(tenant, "INV-9")
    float_money["data"]["total"] = 100.0
    too_many_digits = invoice(tenant, "INV-9", amount="100.001")
    bad_date = invoice(tenant, "INV-9", due_date="2026-02-30")
    due_before = invoice(tenant, "INV-9", due_date="2026-01-01")
    wrong_total = invoice(tenant, "INV-9")
    wrong_total["data"]["total"] = "99.00"
    extra_field = invoice(tenant, "INV-9")
    extra_field["data"]["discount"] = "1.00"
    missing = invoice(tenant, "INV-9")
    del missing["data"]["customer_id"]
    unknown_type = cloud_event(tenant, "invoice.paid", {"invoice_id": "INV-9"})
    other_currency = invoice(tenant, "INV-9", currency="EUR")
    unknown_customer = invoice(tenant, "INV-9", customer_id="NOBODY")
    over_allocation = payment(
        tenant, "PAY-9", amount="500.00", allocations=[{"invoice_id": "INV-1", "amount": "500.00"}]
    )
    unknown_invoice = payment(
        tenant, "PAY-9", allocations=[{"invoice_id": "INV-404", "amount": "5.00"}]
    )
    long_id = dict(good_invoice, id="x" * 500)
    nul_in_name = customer(tenant, "C8")
    nul_in_name["data"]["name"] = "Acme\u0000Corp"
    stale = customer(tenant, "C7", subject="customer/C1", expectedversion=0)
    return [
        ("float money", float_money, "invalid_amount", "data.total"),
        ("too many digits", too_many_digits, "amount_too_many_digits", "data.lines[0].amount"),
        ("impossible date", bad_date, "invalid_date", "data.due_date"),
        ("due before issue", due_before, "due_date_before_issue_date", "data.due_date"),
        ("totals", wrong_total, "total_mismatch", "data.total"),
        ("extra field", extra_field, "unknown_field", "data.discount"),
        ("missing field", missing, "missing_field", "data.customer_id"),
        ("unknown type", unknown_type, "unknown_type", "type"),
        ("other currency", other_currency, "currency_mismatch", "data.currency"),
        ("unknown customer", unknown_customer, "unknown_customer", "data.customer_id"),
        (
            "over-allocation",
            over_allocation,
            "allocation_exceeds_open_amount",
            "data.allocations[0].amount",
        ),
        ("unknown invoice", unknown_invoice, "unknown_invoice", "data.allocations[0].invoice_id"),
        ("oversized id", long_id, "field_too_long", "id"),
        ("NUL in free text", nul_in_name, "invalid_value", "data.name"),
        ("stale expectedversion", stale, "wrong_expected_version", "expectedversion"),
        ("not an object", [1], "not_an_object", ""),
    ]


async def test_every_kind_of_bad_input_is_named_and_changes_nothing(
    client: TestClient[Any, Any],
) -> None:
    tenant = new_tenant()
    status, _ = await post(client, [customer(tenant), invoice(tenant, "INV-1")])
    assert status == 200
    for case, body, code, field in _bad_inputs(tenant):
        before = await head(client)
        status, answer = await post(client, body)
        assert status == 422, case
        assert answer["appended"] == [], case
        assert {"code": code, "field": field} in [
            {"code": entry["code"], "field": entry["field"]} for entry in answer["rejected"]
        ], (case, answer)
        assert all(entry["message"] for entry in answer["rejected"]), case
        assert await head(client) == before, case


async def test_a_batch_with_one_bad_event_appends_nothing_and_lists_every_rejection(
    client: TestClient[Any, Any],
) -> None:
    tenant = new_tenant()
    bad_money = invoice(tenant, "INV-2")
    bad_money["data"]["lines"][0]["amount"] = "-5.00"
    batch = [
        customer(tenant),
        invoice(tenant, "INV-1"),
        bad_money,
        invoice(tenant, "INV-3", customer_id="C404"),
    ]
    before = await head(client)
    status, answer = await post(client, batch)
    assert status == 422
    assert answer["appended"] == []
    assert [(entry["index"], entry["code"], entry["field"]) for entry in answer["rejected"]] == [
        (2, "negative_amount", "data.lines[0].amount"),
        (3, "unknown_customer", "data.customer_id"),
    ]
    assert await head(client) == before
    response = await client.get("/v1/events", params={"tenant": tenant})
    assert (await response.json())["events"] == []


async def test_malformed_bodies_limits_and_media_types(client: TestClient[Any, Any]) -> None:
    tenant = new_tenant()
    before = await head(client)
    status, answer = await post(client, b'{"specversion": "1.0", "id": ')
    assert status == 400
    assert answer["rejected"][0]["code"] == "malformed_json"

    status, answer = await post(
        client, [customer(tenant, f"C{i}") for i in range(request_events_max + 1)]
    )
    assert status == 413
    assert answer["rejected"][0]["code"] == "too_many_events"

    status, answer = await post(client, b" " * (4 * 1024 * 1024 + 10))
    assert status == 413
    assert answer["rejected"][0]["code"] == "request_too_large"

    status, answer = await post(client, customer(tenant), "text/plain")
    assert status == 415
    assert answer["error"]["code"] == "unsupported_media_type"
    assert await head(client) == before


async def test_listing_validates_its_parameters(client: TestClient[Any, Any]) -> None:
    for params, field in (
        ({}, "tenant"),
        ({"tenant": "bad tenant!"}, "tenant"),
        ({"tenant": "acme", "from_position": "-1"}, "from_position"),
        ({"tenant": "acme", "limit": "ten"}, "limit"),
        # Digits int() refuses, and past PostgreSQL's bigint (both answered 500 once).
        ({"tenant": "acme", "from_position": "\u00b2"}, "from_position"),
        ({"tenant": "acme", "from_position": str(2**63)}, "from_position"),
        ({"tenant": "acme", "limit": "1" * 30}, "limit"),
    ):
        response = await client.get("/v1/events", params=params)
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["field"] == field and error["code"].startswith("invalid_") and error["message"]


class _FailingStore(MemoryEventStore):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def append(self, units: list[Unit]) -> list[list[Outcome]]:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (StoreUnavailableError("connection refused"), 503, "store_unavailable"),
        (RuntimeError("a bug"), 500, "internal_error"),
    ],
)
async def test_store_failures_answer_json_without_a_traceback(
    error: Exception, status: int, code: str
) -> None:
    async with TestClient(TestServer(make_app(LedgerService(_FailingStore(error))))) as failing:
        response = await failing.post(
            "/v1/events",
            data=orjson.dumps(customer(new_tenant())),
            headers={"Content-Type": "application/json"},
        )
        body = await response.read()
        assert response.status == status
        assert orjson.loads(body)["error"]["code"] == code
        assert b"Traceback" not in body and b"a bug" not in body
        if status == 503:
            assert response.headers["Retry-After"] == "1"


# --- no request answers 500 ------------------------------------------------------------------

_json = json_values()


@st.composite
def _mutated_event(draw: st.DrawFn) -> dict[str, Any]:
    """A valid example with up to three of its envelope or data fields set to any JSON."""
    raw = example_event(draw(st.sampled_from(sorted(examples))))
    raw["id"] = f"fuzz-{draw(st.integers(0, 10**9))}"
    for _ in range(draw(st.integers(0, 3))):
        target = raw if draw(st.booleans()) else raw["data"]
        if not isinstance(target, dict) or not target:
            break
        target[draw(st.sampled_from([*sorted(target), "extra"]))] = draw(_json)
    return raw


_numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["\u00b2", "\u0661\u0662", " 1", "1_0", "0", str(2**63 - 1), str(2**63)]),
    st.text(max_size=6),
)
_queries = st.fixed_dictionaries(
    {"tenant": st.sampled_from(["acme", "acme", "acme", "bad tenant!"])},
    optional={
        "from_position": _numbers,
        "limit": _numbers,
        "as_of": st.one_of(
            st.sampled_from(["2026-01-31", "1899-12-31", "2999-12-31", "3000-01-01"]),
            st.text(max_size=12),
        ),
        "after": st.one_of(st.sampled_from(["C1", "C\x00", ""]), st.text(max_size=8)),
        "invoices_after": st.one_of(
            st.sampled_from(["2026-01-01:5", "2026-01-01:-5", "x:1", ":"]), st.text(max_size=12)
        ),
    },
)


def _generated(count: int) -> list[tuple[list[Any], list[dict[str, str]]]]:
    """Request bodies and query strings from hypothesis (collected, then sent by the test)."""
    collected: list[tuple[list[Any], list[dict[str, str]]]] = []

    @settings(max_examples=count, deadline=None, database=None)
    @given(
        st.lists(
            st.one_of(_json, _mutated_event(), st.lists(_mutated_event(), max_size=3)), max_size=3
        ),
        st.lists(_queries, max_size=3),
    )
    def collect(bodies: list[Any], queries: list[dict[str, str]]) -> None:
        collected.append((bodies, queries))

    collect()
    return collected


async def test_no_request_answers_a_server_error(client: TestClient[Any, Any]) -> None:
    """Any JSON, events with any field replaced, any query: 4xx or 200, never 5xx (a fuzz like
    this one found six 500s: "²" as a number, positions past bigint, NUL in a cursor, ...)."""
    tenant = new_tenant()  # the examples' "acme" becomes a tenant of this test's own

    def own(value: Any) -> Any:
        if isinstance(value, list):
            return [own(item) for item in value]
        if isinstance(value, dict) and value.get("tenantid") == "acme":
            return {**value, "tenantid": tenant}
        return value

    for bodies, queries in _generated(250):
        for body in bodies:
            raw = json.dumps(own(body)).encode()  # not orjson: integers past 64 bits are JSON too
            for media_type in ("application/json", "application/cloudevents-batch+json"):
                response = await client.post(
                    "/v1/events", data=raw, headers={"Content-Type": media_type}
                )
                assert response.status < 500, (raw[:500], await response.text())
        for query in queries:
            if query.get("tenant") == "acme":
                query = {**query, "tenant": tenant}
            for path in ("/v1/events", "/v1/reports/ar-aging", "/v1/reports/deferred-revenue"):
                response = await client.get(path, params=query)
                assert response.status < 500, (path, query, await response.text())
