"""Reports worked out by hand, as an accountant would check them: Stripe's published recognition
examples, bucket edges, reruns for an earlier date, amendments and cancellations mid-month, credit
notes before and after payment, unapplied cash, MRR movements; then the same figures from the CLI
and from HTTP, and every bad request refused with the field named."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ledger.api import make_app
from ledger.auth import issue_token
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from projections.reports import fresh_report, kpi_names
from tests.ledger import store_builders as b
from tests.ledger.events import new_tenant
from tests.ledger.test_cli import ledger
from tests.projections.scenario import everything, journal, with_tenant


@pytest.fixture(scope="module")
async def store(database_url: str) -> AsyncIterator[PostgresEventStore]:
    opened = await PostgresEventStore.open(database_url)
    yield opened
    await opened.close()


async def append(store: PostgresEventStore, tenant: str, *events: dict[str, Any]) -> None:
    report = await LedgerService(store).append(with_tenant(tenant, list(events)))
    assert not report.rejected, report.rejected


async def get(store: PostgresEventStore, kind: str, tenant: str, as_of: str) -> dict[str, Any]:
    async with store.connection() as conn:
        return await fresh_report(store, conn, kind, tenant, date.fromisoformat(as_of))


def contract(
    contract_id: str, amount: str, start: str, end: str, *, recurring: bool = True
) -> dict[str, Any]:
    return b.raw_event(
        "contract.signed",
        {
            "contract_id": contract_id,
            "customer_id": "C1",
            "start_date": start,
            "end_date": end,
            "currency": "USD",
            "lines": [
                {
                    "line_id": "L1",
                    "description": "Service",
                    "amount": amount,
                    "recognition": "ratable",
                    "recurring": recurring,
                }
            ],
        },
    )


def amend(contract_id: str, effective: str, amount: str) -> dict[str, Any]:
    return b.raw_event(
        "contract.amended",
        {
            "contract_id": contract_id,
            "effective_date": effective,
            "currency": "USD",
            "lines": [
                {
                    "line_id": "L1",
                    "description": "Service",
                    "amount": amount,
                    "recognition": "ratable",
                    "recurring": True,
                }
            ],
        },
    )


async def recognized(store: PostgresEventStore, tenant: str, as_of: str) -> str:
    return str((await get(store, "deferred-revenue", tenant, as_of))["recognized"])


async def revenue_mtd(store: PostgresEventStore, tenant: str, as_of: str) -> str:
    return str((await get(store, "kpi", tenant, as_of))["kpis"]["revenue_mtd"])


def cli_report(database_url: str, kind: str, tenant: str, *more: str) -> Any:
    """`ledger report KIND` as of 2026-03-31, run as a process."""
    return ledger(database_url, "report", kind, "--tenant", tenant, "--as-of", "2026-03-31", *more)


# --- recognition -------------------------------------------------------------------------------


async def test_stripe_31_dollars_from_jan_15_to_feb_14(store: PostgresEventStore) -> None:
    tenant = new_tenant()
    await append(
        store, tenant, b.customer("C1"), contract("K1", "31.00", "2026-01-15", "2026-02-15")
    )
    assert await revenue_mtd(store, tenant, "2026-01-31") == "17.00"
    assert await revenue_mtd(store, tenant, "2026-02-28") == "14.00"
    assert await recognized(store, tenant, "2026-01-14") == "0.00"
    assert await recognized(store, tenant, "2026-01-15") == "1.00"  # the start day counts
    assert await recognized(store, tenant, "2026-12-31") == "31.00"


async def test_stripe_365_dollars_for_a_year(store: PostgresEventStore) -> None:
    tenant = new_tenant()
    await append(
        store,
        tenant,
        b.customer("C1"),
        contract("K1", "365.00", "2026-01-01", "2027-01-01"),
        b.invoice(
            "INV-1", "C1", "365.00", "2026-01-01", "2026-01-31", contract_id="K1", line_id="L1"
        ),
    )
    assert [
        await revenue_mtd(store, tenant, day) for day in ("2026-01-31", "2026-02-28", "2026-03-31")
    ] == ["31.00", "28.00", "31.00"]
    deferred = await get(store, "deferred-revenue", tenant, "2026-03-31")
    assert (deferred["billed"], deferred["recognized"], deferred["deferred"]) == (
        "365.00",
        "90.00",
        "275.00",
    )
    waterfall = {month["month"]: month["amount"] for month in deferred["waterfall"]}
    assert waterfall["2026-04"] == "30.00" and waterfall["2026-12"] == "31.00"
    assert sum(float(amount) for amount in waterfall.values()) == pytest.approx(275.0)
    balance = await get(store, "trial-balance", tenant, "2026-03-31")
    accounts = {a["account"]: a["balance"] for a in balance["accounts"]}
    assert accounts["deferred_revenue"] == "275.00" and accounts["revenue"] == "90.00"
    assert balance["balanced"]


async def test_unbilled_revenue_when_recognition_runs_ahead_of_billing(
    store: PostgresEventStore,
) -> None:
    tenant = new_tenant()
    await append(
        store, tenant, b.customer("C1"), contract("K1", "365.00", "2026-01-01", "2027-01-01")
    )
    deferred = await get(store, "deferred-revenue", tenant, "2026-01-31")
    assert (deferred["billed"], deferred["recognized"], deferred["unbilled"]) == (
        "0.00",
        "31.00",
        "31.00",
    )
    kpis = (await get(store, "kpi", tenant, "2026-01-31"))["kpis"]
    assert kpis["unbilled_revenue"] == "31.00" and kpis["deferred_revenue"] == "0.00"


async def test_amendment_mid_month_is_prospective(store: PostgresEventStore) -> None:
    tenant = new_tenant()
    await append(
        store,
        tenant,
        b.customer("C1"),
        contract("K1", "365.00", "2026-01-01", "2027-01-01"),
        amend("K1", "2026-04-16", "730.00"),
    )
    # 105 days at 1.00 before April 16; then (730 - 105) over the 260 days left.
    assert await recognized(store, tenant, "2026-04-15") == "105.00"
    assert await recognized(store, tenant, "2026-04-30") == "141.06"  # 105 + 15 x 625/260
    assert await recognized(store, tenant, "2026-12-31") == "730.00"
    # Asked for an earlier date, the amendment (effective later) changes nothing.
    assert await revenue_mtd(store, tenant, "2026-03-31") == "31.00"


async def test_cancellation_mid_month_stops_recognition_and_keeps_billing_deferred(
    store: PostgresEventStore,
) -> None:
    tenant = new_tenant()
    await append(
        store,
        tenant,
        b.customer("C1"),
        contract("K1", "365.00", "2026-01-01", "2027-01-01"),
        b.invoice(
            "INV-1", "C1", "365.00", "2026-01-01", "2026-01-31", contract_id="K1", line_id="L1"
        ),
        b.cancellation("2026-03-16", "K1"),
    )
    assert await revenue_mtd(store, tenant, "2026-03-31") == "15.00"
    later = await get(store, "deferred-revenue", tenant, "2026-12-31")
    assert (later["recognized"], later["deferred"], later["waterfall"]) == ("74.00", "291.00", [])
    kpis = (await get(store, "kpi", tenant, "2026-03-31"))["kpis"]
    assert kpis["active_contracts"] == 0 and kpis["mrr"] == "0.00"
    assert tuple(kpis) == kpi_names  # the names other tools rely on, all of them, in order


# --- AR aging ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("as_of", "bucket"),
    [
        ("2026-01-01", "current"),
        ("2026-01-31", "1-30"),
        ("2026-02-01", "31-60"),
        ("2026-03-02", "31-60"),
        ("2026-03-03", "61-90"),
        ("2026-04-01", "61-90"),
        ("2026-04-02", "91-120"),
        ("2026-05-01", "91-120"),
        ("2026-05-02", "over-120"),
    ],
)
async def test_bucket_edges(store: PostgresEventStore, as_of: str, bucket: str) -> None:
    # Due on January 1: January 31 is 30 days past due, February 1 is 31, and so on.
    tenant = new_tenant()
    await append(
        store,
        tenant,
        b.customer("C1"),
        b.invoice("INV-1", "C1", "100.00", "2025-12-01", "2026-01-01"),
    )
    aging = await get(store, "ar-aging", tenant, as_of)
    assert aging["buckets"][bucket] == "100.00"
    assert [name for name, amount in aging["buckets"].items() if amount != "0.00"] == [bucket]
    assert aging["invoices"][0]["bucket"] == bucket
    assert (
        aging["invoices"][0]["days_past_due"] == (date.fromisoformat(as_of) - date(2026, 1, 1)).days
    )


async def test_rerun_for_an_earlier_date_ignores_later_events(store: PostgresEventStore) -> None:
    tenant = new_tenant()
    await append(
        store,
        tenant,
        b.customer("C1"),
        b.invoice("INV-1", "C1", "100.00", "2026-01-15", "2026-02-14"),
    )
    before = await get(store, "ar-aging", tenant, "2026-02-20")
    await append(store, tenant, b.payment("100.00", "PAY-1", "C1", "2026-03-01"))
    await append(store, tenant, b.invoice("INV-2", "C1", "50.00", "2026-03-05", "2026-04-04"))
    again = await get(store, "ar-aging", tenant, "2026-02-20")
    assert {k: v for k, v in again.items() if k != "position"} == {
        k: v for k, v in before.items() if k != "position"
    }
    assert again["buckets"]["1-30"] == "100.00"
    now = await get(store, "ar-aging", tenant, "2026-03-05")
    assert (now["total"], [i["invoice_id"] for i in now["invoices"]]) == ("50.00", ["INV-2"])


async def test_credit_notes_before_and_after_payment_and_unapplied_cash(
    store: PostgresEventStore,
) -> None:
    tenant = new_tenant()
    await append(
        store,
        tenant,
        b.customer("C1"),
        b.invoice("INV-1", "C1", "100.00", "2026-01-01", "2026-01-31"),
        b.invoice("INV-2", "C1", "100.00", "2026-01-02", "2026-02-01"),
        b.credit_note("30.00", "CN-1", "INV-1", "2026-01-05"),  # before payment: reduces AR
        b.payment("220.00", "PAY-1", "C1", "2026-01-10"),  # 70 + 100 applied, 50 unapplied
        b.credit_note("20.00", "CN-2", "INV-2", "2026-01-12"),  # after payment: customer credit
    )
    aging = await get(store, "ar-aging", tenant, "2026-01-12")
    assert (aging["total"], aging["unapplied"], aging["net"]) == ("0.00", "70.00", "-70.00")
    earlier = await get(store, "ar-aging", tenant, "2026-01-06")
    assert (earlier["total"], earlier["unapplied"]) == ("170.00", "0.00")
    balance = await get(store, "trial-balance", tenant, "2026-01-12")
    accounts = {a["account"]: a["balance"] for a in balance["accounts"]}
    assert accounts == {
        "accounts_receivable": "0.00",
        "cash": "220.00",
        "customer_credits": "70.00",
        "revenue": "150.00",
    }
    kpis = (await get(store, "kpi", tenant, "2026-01-31"))["kpis"]
    assert (kpis["billings_mtd"], kpis["unapplied"], kpis["ar"]) == ("150.00", "70.00", "0.00")


async def test_write_off_void_and_refund_reopening_an_invoice(store: PostgresEventStore) -> None:
    tenant = new_tenant()
    await append(
        store,
        tenant,
        b.customer("C1"),
        b.invoice("INV-1", "C1", "100.00", "2026-01-01", "2026-01-31"),
        b.invoice("INV-2", "C1", "60.00", "2026-01-02", "2026-02-01"),
        b.invoice("INV-3", "C1", "10.00", "2026-01-03", "2026-02-02"),
        b.void("INV-3", "2026-01-04"),
        b.payment("100.00", "PAY-1", "C1", "2026-01-10", allocations={"INV-1": "100.00"}),
        b.write_off("60.00", "INV-2", "2026-03-01"),
        b.refund("40.00", "PAY-1", "2026-03-05"),
    )
    aging = await get(store, "ar-aging", tenant, "2026-03-05")
    assert [(i["invoice_id"], i["open"]) for i in aging["invoices"]] == [("INV-1", "40.00")]
    kpis = (await get(store, "kpi", tenant, "2026-03-31"))["kpis"]
    assert (kpis["expenses_mtd"], kpis["cash"]) == ("60.00", "60.00")
    assert (await get(store, "trial-balance", tenant, "2026-03-31"))["balanced"]


async def test_an_invoice_paid_refunded_and_then_voided(store: PostgresEventStore) -> None:
    """Paid in full, the payment refunded in full (the invoice open again), then voided after the
    refund (a void dated before it is refused): each report as of each step."""
    tenant = new_tenant()
    await append(
        store,
        tenant,
        b.customer("C1"),
        b.invoice("INV-1", "C1", "100.00", "2026-01-01", "2026-01-31"),
        b.payment("100.00", "PAY-1", "C1", "2026-01-10", allocations={"INV-1": "100.00"}),
        b.refund("100.00", "PAY-1", "2026-01-20"),
    )
    early = await LedgerService(store).append(with_tenant(tenant, [b.void("INV-1", "2026-01-15")]))
    assert [(r["code"], r["field"]) for r in early.rejected] == [
        ("date_before_reference", "data.date")
    ]
    await append(store, tenant, b.void("INV-1", "2026-01-25"))
    steps = {
        "2026-01-05": ("100.00", ["INV-1"], {"accounts_receivable": "100.00", "cash": "0.00"}),
        "2026-01-15": ("0.00", [], {"accounts_receivable": "0.00", "cash": "100.00"}),
        "2026-01-22": ("100.00", ["INV-1"], {"accounts_receivable": "100.00", "cash": "0.00"}),
        "2026-01-31": ("0.00", [], {"accounts_receivable": "0.00", "cash": "0.00"}),
    }
    for as_of, (open_total, open_invoices, balances) in steps.items():
        aging = await get(store, "ar-aging", tenant, as_of)
        assert (aging["total"], [i["invoice_id"] for i in aging["invoices"]]) == (
            open_total,
            open_invoices,
        ), as_of
        trial = await get(store, "trial-balance", tenant, as_of)
        accounts = {a["account"]: a["balance"] for a in trial["accounts"]}
        assert trial["balanced"], as_of
        assert {name: accounts.get(name, "0.00") for name in balances} == balances, as_of
        revenue = "0.00" if as_of == "2026-01-31" else "100.00"  # the void takes it back
        assert accounts.get("revenue", "0.00") == revenue, as_of
    kpis = (await get(store, "kpi", tenant, "2026-01-31"))["kpis"]
    assert (kpis["ar"], kpis["cash"], kpis["revenue_mtd"]) == ("0.00", "0.00", "0.00")


# --- MRR -------------------------------------------------------------------------------------------


async def test_mrr_movements_new_expansion_churn_and_reactivation(
    store: PostgresEventStore,
) -> None:
    tenant = new_tenant()
    await append(
        store,
        tenant,
        b.customer("C1"),
        contract("K1", "1200.00", "2026-01-01", "2027-01-01"),  # 100 a month
        amend("K1", "2026-03-10", "2400.00"),  # 200 a month
        b.cancellation("2026-05-01", "K1"),
        contract("K2", "600.00", "2026-07-01", "2026-10-01"),  # 200 a month, 3 months
    )
    months = {
        month: await get(store, "mrr-movements", tenant, month)
        for month in ("2026-01-31", "2026-03-31", "2026-04-30", "2026-05-31", "2026-07-31")
    }
    assert (months["2026-01-31"]["new"], months["2026-01-31"]["ending_mrr"]) == ("100.00", "100.00")
    assert months["2026-03-31"]["expansion"] == "100.00"
    assert months["2026-04-30"]["churn"] == "0.00"  # live through April 30
    assert (months["2026-05-31"]["churn"], months["2026-05-31"]["ending_mrr"]) == ("200.00", "0.00")
    assert months["2026-07-31"]["reactivation"] == "200.00"
    kpis = (await get(store, "kpi", tenant, "2026-07-31"))["kpis"]
    assert (kpis["mrr"], kpis["arr"], kpis["active_contracts"]) == ("200.00", "2400.00", 1)


# --- the same figures from the CLI and from HTTP ----------------------------------------------------


async def test_cli_report_formats_and_errors(store: PostgresEventStore, database_url: str) -> None:
    tenant = new_tenant()
    await append(store, tenant, *with_tenant(tenant, everything(tenant)))
    expected = await get(store, "trial-balance", tenant, "2026-03-31")
    result = ledger(
        database_url, "report", "trial-balance", "--tenant", tenant, "--as-of", "2026-03-31"
    )
    assert result.returncode == 0, result.stderr
    import orjson

    assert orjson.loads(result.stdout) == expected
    table = cli_report(database_url, "ar-aging", tenant, "--format", "table")
    assert table.returncode == 0 and b"over-120" in table.stdout and b"TOTAL" in table.stdout
    csv = cli_report(database_url, "kpi", tenant, "--format", "csv")
    assert csv.stdout.splitlines()[0] == b"kpi,value"
    for args, field in (
        (["nope", "--tenant", tenant, "--as-of", "2026-03-31"], b"kind"),
        (["kpi", "--tenant", tenant, "--as-of", "2026-3-31"], b"as_of"),
        (["kpi", "--tenant", "bad tenant!", "--as-of", "2026-03-31"], b"--tenant"),
    ):
        refused = ledger(database_url, "report", *args)
        assert refused.returncode == 2 and field in refused.stderr, refused.stderr
        assert b"Traceback" not in refused.stderr


async def test_http_reports_match_the_cli_and_check_the_token(store: PostgresEventStore) -> None:
    tenant = new_tenant()
    await append(store, tenant, *everything(tenant))
    secret = "s" * 32
    client = TestClient(TestServer(make_app(LedgerService(store), jwt_secret=secret)))
    await client.start_server()
    try:
        auth = {"Authorization": f"Bearer {issue_token(secret, tenant)}"}
        response = await client.get(
            f"/v1/reports/deferred-revenue?tenant={tenant}&as_of=2026-03-31", headers=auth
        )
        assert response.status == 200
        assert await response.json() == await get(store, "deferred-revenue", tenant, "2026-03-31")
        assert (await client.get(f"/v1/reports/kpi?tenant={tenant}&as_of=2026-03-31")).status == 401
        other = {"Authorization": f"Bearer {issue_token(secret, new_tenant())}"}
        assert (
            await client.get(f"/v1/reports/kpi?tenant={tenant}&as_of=2026-03-31", headers=other)
        ).status == 403
        bad_date = await client.get(
            f"/v1/reports/kpi?tenant={tenant}&as_of=yesterday", headers=auth
        )
        assert bad_date.status == 400 and (await bad_date.json())["error"]["field"] == "as_of"
        bad_kind = await client.get(
            f"/v1/reports/pnl?tenant={tenant}&as_of=2026-03-31", headers=auth
        )
        assert bad_kind.status == 404 and (await bad_kind.json())["error"]["field"] == "kind"
        limited = await client.get(
            f"/v1/reports/ar-aging?tenant={tenant}&as_of=2026-01-25&limit=1", headers=auth
        )
        body = await limited.json()
        assert len(body["invoices"]) == 1 and body["invoices_total"] > 1
    finally:
        await client.close()


async def test_paged_lists_follow_their_cursor_to_the_whole_list(
    store: PostgresEventStore, database_url: str
) -> None:
    """AR aging's customers and deferred revenue's contracts, a page at a time over HTTP (each
    answer's `*_next` is the next request's `after`) and from the CLI, add up to the unpaged list;
    the totals do not move with the page; a cursor where it cannot apply is refused, named."""
    tenant = new_tenant()
    # Ids whose code point order ("C10" < "C2") is not their number order.
    customers = [f"C{n}" for n in range(1, 12)]
    events = [b.customer(c) for c in customers]
    for n, c in enumerate(customers):
        events.append(b.contract(f"K{n}", c, "2026-01-01", "2027-01-01"))
        events.append(b.invoice(f"INV-{n}", c, f"{100 + n}.00", "2026-01-10", "2026-02-09"))
    await append(store, tenant, *events)
    whole = {
        kind: await get(store, kind, tenant, "2026-03-31")
        for kind in ("ar-aging", "deferred-revenue")
    }
    assert [c["customer_id"] for c in whole["ar-aging"]["customers"]] == sorted(customers)
    secret = "s" * 32
    client = TestClient(TestServer(make_app(LedgerService(store), jwt_secret=secret)))
    await client.start_server()
    try:
        auth = {"Authorization": f"Bearer {issue_token(secret, tenant)}"}
        for kind, name in (("ar-aging", "customers"), ("deferred-revenue", "contracts")):
            listed: list[dict[str, Any]] = []
            after = ""
            pages = 0
            while True:
                response = await client.get(
                    f"/v1/reports/{kind}?tenant={tenant}&as_of=2026-03-31&limit=4{after}",
                    headers=auth,
                )
                assert response.status == 200
                page = await response.json()
                pages += 1
                assert len(page[name]) <= 4 and page[f"{name}_total"] == 11
                assert (
                    page["total" if kind == "ar-aging" else "billed"]
                    == whole[kind]["total" if kind == "ar-aging" else "billed"]
                )
                listed += page[name]
                if page[f"{name}_next"] is None:
                    break
                after = f"&after={page[f'{name}_next']}"
            assert pages == 3 and listed == whole[kind][name]
        for query, field in (
            ("kpi?after=C1", "after"),
            ("ar-aging?limit=-1", "limit"),
            ("ar-aging?limit=x", "limit"),
            ("ar-aging?after=", "after"),
            # Past bigint, digits int() refuses, NUL, a cursor's sign: each answered 500 once.
            (f"ar-aging?limit={2**63}", "limit"),
            ("ar-aging?limit=%C2%B2", "limit"),
            ("ar-aging?after=C%00", "after"),
            ("ar-aging?invoices_after=2026-01-01:-5", "invoices_after"),
        ):
            separator = "&" if "?" in query else "?"
            refused = await client.get(
                f"/v1/reports/{query}{separator}tenant={tenant}&as_of=2026-03-31", headers=auth
            )
            body = await refused.json()
            assert refused.status == 400 and body["error"]["field"] == field, (query, body)
    finally:
        await client.close()
    import orjson

    result = cli_report(database_url, "ar-aging", tenant, "--limit", "2", "--after", "C10")
    assert result.returncode == 0, result.stderr
    page = orjson.loads(result.stdout)
    assert [c["customer_id"] for c in page["customers"]] == ["C11", "C2"]
    assert page["customers_next"] == "C2" and len(page["invoices"]) == 2
    refused = cli_report(database_url, "trial-balance", tenant, "--after", "C1")
    assert (
        refused.returncode == 2
        and b"--after" in refused.stderr
        and b"Traceback" not in refused.stderr
    )


async def test_invoices_page_by_their_cursor_to_the_whole_list(
    store: PostgresEventStore, database_url: str
) -> None:
    """AR aging's open invoices, oldest due date first, a page at a time (`invoices_next` is the
    next request's `invoices_after`) over HTTP and from the CLI: they add up to the unpaged list,
    ties on a due date in issue order; a cursor that is not one, or on another report, is refused,
    named, over HTTP and from the CLI."""
    tenant = new_tenant()
    events: list[dict[str, Any]] = [b.customer("C1"), b.customer("C2")]
    for n in range(7):  # 2026-02-09 three times: their order is their position
        due = ["2026-02-09", "2026-02-09", "2026-01-31", "2026-03-01", "2026-02-09"][n % 5]
        customer = "C1" if n % 2 else "C2"
        events.append(b.invoice(f"INV-{n}", customer, f"{10 + n}.00", "2026-01-05", due))
    await append(store, tenant, *events)
    whole = await get(store, "ar-aging", tenant, "2026-03-31")
    assert whole["invoices_total"] == 7 and whole["invoices_next"] is None
    assert [i["invoice_id"] for i in whole["invoices"]] == [
        "INV-2", "INV-0", "INV-1", "INV-4", "INV-5", "INV-6", "INV-3"
    ]  # fmt: skip
    secret = "s" * 32
    client = TestClient(TestServer(make_app(LedgerService(store), jwt_secret=secret)))
    await client.start_server()
    try:
        auth = {"Authorization": f"Bearer {issue_token(secret, tenant)}"}
        listed: list[dict[str, Any]] = []
        cursor = ""
        pages = 0
        while True:
            response = await client.get(
                f"/v1/reports/ar-aging?tenant={tenant}&as_of=2026-03-31&limit=3{cursor}",
                headers=auth,
            )
            assert response.status == 200
            page = await response.json()
            pages += 1
            assert page["invoices_total"] == 7 and page["total"] == whole["total"]
            listed += page["invoices"]
            if page["invoices_next"] is None:
                break
            cursor = f"&invoices_after={page['invoices_next']}"
        assert pages == 3 and listed == whole["invoices"]
        for query in ("ar-aging?invoices_after=2026-02-09", "kpi?invoices_after=2026-02-09:1"):
            refused = await client.get(
                f"/v1/reports/{query}&tenant={tenant}&as_of=2026-03-31", headers=auth
            )
            body = await refused.json()
            assert refused.status == 400, body
            assert body["error"]["field"] == "invoices_after", body
    finally:
        await client.close()
    import orjson

    first = orjson.loads(cli_report(database_url, "ar-aging", tenant, "--limit", "2").stdout)
    result = cli_report(
        database_url, "ar-aging", tenant, "--limit", "2", "--invoices-after", first["invoices_next"]
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["invoices"] == whole["invoices"][2:4]
    refused = cli_report(database_url, "ar-aging", tenant, "--invoices-after", "soon")
    assert refused.returncode == 2 and b"--invoices-after" in refused.stderr, refused.stderr
    assert b"Traceback" not in refused.stderr


async def test_the_cash_alert_counts_the_payables_due_within_30_days_only(
    store: PostgresEventStore,
) -> None:
    """DESIGN section 7: cash + receivables due - payables due within 30 days (it took every
    payable). A payable due in two months counts only once it is within 30 days; an overdue one
    counts; a payment lowers it from its own day; an expense without a due date is due the day it
    was incurred."""
    tenant = new_tenant()

    def expense(expense_id: str, amount: str, incurred: str, due: str | None) -> dict[str, Any]:
        data = {
            "expense_id": expense_id,
            "vendor": "Vendor",
            "category": "rent",
            "incurred_date": incurred,
            "amount": amount,
            "currency": "USD",
        }
        if due is not None:
            data["due_date"] = due
        return b.raw_event("expense.recorded", data)

    events = [
        journal("J-1", "2026-01-01", [("cash", "2000.00", ""), ("equity", "", "2000.00")]),
        expense("X-far", "5000.00", "2026-03-01", "2026-05-31"),  # due in 3 months
        expense("X-soon", "600.00", "2026-03-01", "2026-03-20"),
        expense("X-late", "300.00", "2026-01-15", "2026-02-15"),  # overdue
        expense("X-now", "250.00", "2026-03-05", None),  # due the day incurred
        expense("X-edge", "10.00", "2026-03-01", "2026-06-09"),  # 30 days after 2026-05-10
        expense("X-out", "20.00", "2026-03-01", "2026-06-10"),  # 31 days after
        b.expense_paid("100.00", "X-soon", "2026-03-08"),
        b.expense_paid("200.00", "X-late", "2026-04-02"),
        # An accrual posted by hand: no due date, so due the day it is posted.
        journal(
            "J-2",
            "2026-05-01",
            [("expense:audit", "100.00", ""), ("accounts_payable", "", "100.00")],
        ),
    ]
    appended = await LedgerService(store).append(with_tenant(tenant, events))
    assert appended.ok, appended.as_json()

    async def kpi(day: date) -> dict[str, Any]:
        async with store.connection() as conn:
            return await fresh_report(store, conn, "kpi", tenant, day)

    march = await kpi(date(2026, 3, 10))
    assert march["kpis"]["ap"] == "6080.00"  # every payable, as the balance sheet has it
    assert march["kpis"]["cash"] == "1900.00"
    # Due by 2026-04-09: X-soon 500 + X-late 300 + X-now 250 = 1,050 <= 1,900: no alert.
    assert march["alerts"] == []
    # By 2026-05-10 X-far falls due within 30 days: 1,700 cash, 5,000 + 500 + 100 + 250 + 10 due
    # (X-edge on the 30th day; X-out, on the 31st, not) + the accrual's 100.
    [alert] = (await kpi(date(2026, 5, 10)))["alerts"]
    assert alert == {
        "code": "cash_negative_30_days",
        "message": "cash may go negative within 30 days: 1700.00 cash + 0.00 receivables due"
        " - 5960.00 payables due = -4260.00",
    }
