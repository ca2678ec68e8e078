"""The business dates the ledger keeps (`ledger.contract.date_min` to `date_max`), end to end.

A contract ending in 9999 was once accepted, and then every projection of its tenant failed on it
("year 10000 is out of range": the read models step past a contract's last day). Now the gate
refuses a date outside the window with the field named, and events at both edges of the window
are accepted and projected by every projector; a report's `as_of` keeps to the same window.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ledger.contract import date_max, date_min
from ledger.errors import RejectionCode
from ledger.service import LedgerService
from ledger.store.memory import MemoryEventStore
from ledger.store.postgres import PostgresEventStore
from projections.core import ProjectedEvent, fold, is_table_projector
from projections.registry import all_projectors
from projections.reports import KINDS, ReportError, fresh_report, parse_as_of
from projections.tables import MemoryTables
from tests.ledger import store_builders as b

tenant = "edges"


def _in_tenant(*events: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**event, "tenantid": tenant} for event in events]


def _dated(event: dict[str, Any], **dates: str) -> dict[str, Any]:
    return {**event, "data": {**event["data"], **dates}}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("end_date", "9999-12-31"),
        ("end_date", "3000-01-01"),
        ("start_date", "1899-12-31"),
        ("start_date", "0001-01-01"),
    ],
)
async def test_a_date_outside_the_window_is_refused_with_its_field(field: str, value: str) -> None:
    report = await LedgerService(MemoryEventStore()).append(
        _in_tenant(b.customer("C1"), _dated(b.contract(), **{field: value}))
    )
    assert report.appended == []
    [rejection] = report.rejected
    assert (rejection["code"], rejection["field"]) == (RejectionCode.invalid_date, f"data.{field}")
    assert str(date_min) in rejection["message"] and str(date_max) in rejection["message"]


def _at_the_edges() -> list[dict[str, Any]]:
    return _in_tenant(
        b.customer("C1"),
        b.contract("K1", start_date=str(date_min), end_date="1901-01-01"),
        b.amendment(str(date_min), contract_id="K1"),
        b.contract("K2", start_date="2999-01-01", end_date=str(date_max)),
        b.obligation("L2", date="2999-12-30", contract_id="K2"),
        b.cancellation("2999-12-30", contract_id="K2"),
        _dated(b.invoice("INV-1", "C1"), issue_date=str(date_min), due_date=str(date_max)),
        _dated(
            b.invoice("INV-2", "C1", contract_id="K2"),
            issue_date=str(date_max),
            due_date=str(date_max),
        ),
        _dated(b.payment("50.00"), date=str(date_max)),
    )


async def test_events_at_both_edges_are_accepted_and_every_projector_applies_them() -> None:
    store = MemoryEventStore()
    report = await LedgerService(store).append(_at_the_edges())
    assert not report.rejected, report.rejected
    recorded = [ProjectedEvent.from_recorded(e) for e in await store.read(tenant, 1, 100)]
    projectors = all_projectors()
    states: dict[Any, Any] = {}
    fold([p for p in projectors if not is_table_projector(p)], states, recorded)
    tables = MemoryTables()
    applied = tables.apply([p for p in projectors if is_table_projector(p)], recorded)
    assert applied, "the table projectors applied nothing"
    contracts = {row[0][1] for row in tables.keyed["dr_contracts"].items()}
    assert contracts == {("K1",), ("K2",)}
    months = {row["month"] for row in tables.keyed["dr_recognised_months"].values()}
    assert min(months).year == date_min.year and max(months).year == date_max.year


async def test_every_report_answers_at_both_edges(database_url: str) -> None:
    store = await PostgresEventStore.open(database_url)
    try:
        name = f"{tenant}-{uuid.uuid4().hex[:8]}"
        events = [{**event, "tenantid": name} for event in _at_the_edges()]
        report = await LedgerService(store).append(events)
        assert not report.rejected, report.rejected
        answers = {}
        for kind in KINDS:
            for as_of in (date_min, date_max):
                async with store.connection() as conn:
                    answers[kind, as_of] = await fresh_report(store, conn, kind, name, as_of)
    finally:
        await store.close()
    assert {answer["as_of"] for answer in answers.values()} == {str(date_min), str(date_max)}
    aging = answers["ar-aging", date_max]
    # Both due on the last day: the payment goes to the older, INV-1; INV-2 stays whole.
    assert (aging["total"], aging["overdue"]) == ("150.00", "0.00")
    assert [invoice["open"] for invoice in aging["invoices"]] == ["50.00", "100.00"]


@pytest.mark.parametrize("as_of", ["1899-12-31", "3000-01-01", "9999-12-31"])
def test_a_report_as_of_outside_the_window_names_the_field(as_of: str) -> None:
    with pytest.raises(ReportError) as refused:
        parse_as_of(as_of)
    assert refused.value.field == "as_of"
    assert parse_as_of(str(date_max)) == date_max
