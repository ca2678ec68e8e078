"""Reports over the read models, as of a date: KPIs, AR aging, deferred revenue, trial balance and
MRR movements. The CLI (`ledger report`) and HTTP (`GET /v1/reports/{kind}`) both call `report`.

An as-of date means the end of that day: an event dated on it counts, nothing dated after it does.
Figures are computed in full precision and rounded to the currency's minor unit only here, when
reported (recognition per contract line, MRR per customer, so totals add up to the cent); ratios to
2 decimals, days to 1. Nothing here reads the clock: callers turn "today" into an as-of date.

Choices where DESIGN is silent, as the revenue tools do it:
- billings are invoiced amounts before tax, net of credit notes and voids; DSO divides AR (which
  includes tax) by the last 90 days' billings with tax, DPO divides AP by the last 90 days' expenses
  with tax, so each ratio compares like with like;
- expenses include bad debt (write-offs);
- NRR and GRR compare each customer's MRR 12 months before the as-of date with MRR on it, over the
  customers that had MRR then; null when there were none;
- MRR movements cover the month of `as_of` up to `as_of` (month to date when as_of is mid-month);
- the "cash may go negative" alert projects cash + receivables due within 30 days - all payables
  (expenses carry no due date in the general ledger, so all of AP counts as due);
- AR aging lists invoices oldest due date first; `limit` caps each list of a report (AR aging's
  customers and invoices, deferred revenue's contracts, MRR movements' customers), never the
  totals, and `after` pages the customers or contracts by id in code point order (`PAGED`), the
  answer's `<list>_next` being the next page's `after`. Paging is what lets a tenant with 100,000
  open invoices get its aging in milliseconds: every customer's buckets move with the as-of date,
  so no increment can keep them, and listing them all means summing every open (customer, due
  date) cell; a page sums only its own customers' cells.

How the figures stay exact while the queries read aggregates (DESIGN section 9: p95 <= 20 ms with
100,000 open invoices), with `reference_reports` in the tests as the straightforward version they
must equal:
- AR: the projector's per due date, per customer and per customer-and-due-date totals are today's
  state; a report as of D corrects them by the invoices issued after D or changed after D (open
  on D = open now + the changes dated after D, as before). AR amounts are whole minor units, so
  sums are exact at any size.
- Recognition: each line's segment that applies on D is a `dr_segments` row, with its values in
  whole minor units as the projector stored them (bigints; sums of bigints are exact). Its rounded
  value is a constant (a point-in-time segment, a finished or flat one: the value Python stored,
  rounded half to even by the projector), or, for a ratable segment part-way through with nothing
  recognised before it and an amount in whole minor units, amount x elapsed / days rounded half to
  even in integer arithmetic (`ledger_spread_minor`), which is the exact quotient rounded. That is
  the digit Python's 28-digit decimal gives: amount x elapsed fits a bigint, so Python multiplies
  exactly and keeps at least 9 digits after the minor unit in the quotient; unless the exact
  quotient is a tie it lies at least 1 / (2 x days) minor units from one, far more than that
  error, and a tie (one digit after the minor unit) is exact in both. Only an amended segment
  part-way through (its base carries 28 digits), or a value outside a bigint, is left to Python,
  with `accounting.recognised_in_segment` itself.
- The waterfall: `dr_schedule_months` holds, per month, what the lines' latest schedules recognise
  (their first month from zero), keyed by the day each schedule starts. For the schedules started
  by D, the months after D's month are those sums, and D's month is the sum up to it less what
  those lines had recognised on D. A line amended after D (a later segment) is worked out in
  Python from its segments as they stood on D, as before.
- MRR per customer is summed and rounded half to even in SQL, as Python rounded the same sum.
"""

from __future__ import annotations

import calendar
import csv
import io
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from ledger.contract import date_max, date_min
from ledger.store import position_max, whole_number
from ledger.store.postgres import PostgresEventStore
from projections import accounting as acc
from projections.ar_aging import BUCKETS, bucket_of

KINDS = ("kpi", "ar-aging", "deferred-revenue", "trial-balance", "mrr-movements")
# The projections a report reads; a report catches these up for its tenant first.
REPORT_PROJECTIONS = ("general_ledger", "ar_aging", "deferred_revenue", "mrr")

zero = Decimal(0)

# The KPI report's queries that read tables a batch may leave alone, and those tables: a caller that
# knows which tables changed since it last computed the KPIs of a date (the worker's publisher)
# gives `report` the rows of the others back (`KpiCache`) instead of having them read again. The
# ledger's and the flows' queries read `gl_daily`, which nearly every event moves: always read.
KPI_PARTS: dict[str, frozenset[str]] = {
    "recognition": frozenset({"dr_segments", "dr_billing", "dr_recognised_months"}),
    "receivables": frozenset(
        {"ar_changes", "ar_invoices", "ar_open_by_due_date", "ar_open_by_customer", "dr_contracts"}
    ),
    "mrr": frozenset({"mrr_segments"}),
}
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True)
class KpiSnapshot:
    """What a KPI report was computed from: the read models' position per projection (in its
    snapshot), the date and the currency's digits; `parts`: the rows of its `KPI_PARTS` queries."""

    positions: dict[str, int]
    as_of: date
    digits: int
    parts: dict[str, Rows]


class KpiCache(Protocol):
    """Keeps the `KPI_PARTS` rows of a tenant's last KPI report (`computed`) and says which of
    them still hold for a new one (`reusable`: none unless exactly so)."""

    def reusable(self, positions: dict[str, int], as_of: date, digits: int) -> dict[str, Rows]: ...

    def computed(self, snapshot: KpiSnapshot) -> None: ...


# The names other tools rely on (issue 4's contract): the `kpis` of the kpi report, in the order
# DESIGN section 7 lists them, and the movements of the mrr-movements report, in bridge order.
kpi_names = (
    "revenue_mtd",
    "revenue_ytd",
    "billings_mtd",
    "expenses_mtd",
    "net_income_mtd",
    "margin_mtd",
    "cash",
    "ar",
    "ar_overdue",
    "ar_over_90_share",
    "unapplied",
    "ap",
    "deferred_revenue",
    "unbilled_revenue",
    "dso",
    "dpo",
    "current_ratio",
    "mrr",
    "arr",
    "nrr",
    "grr",
    "customers",
    "active_contracts",
)
mrr_movement_names = (
    "starting_mrr",
    "new",
    "reactivation",
    "expansion",
    "contraction",
    "churn",
    "ending_mrr",
)


class ReportError(ValueError):
    """A report request that cannot be answered: names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def parse_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ReportError("kind", f"unknown report {kind!r}; one of {', '.join(KINDS)}")
    return kind


def parse_as_of(text: str | None) -> date:
    if not text:
        raise ReportError("as_of", "is required (YYYY-MM-DD)")
    try:
        if len(text) != 10:
            raise ValueError(text)
        as_of = date.fromisoformat(text)
    except ValueError:
        raise ReportError("as_of", f"{text!r} is not a date (YYYY-MM-DD)") from None
    if not date_min <= as_of <= date_max:
        raise ReportError("as_of", f"must be between {date_min} and {date_max} (the dates kept)")
    return as_of


# The list each report pages (`limit` and `after`), by its key; `limit` also caps AR aging's
# invoice list (oldest due date first, no cursor). Totals always cover everything.
PAGED = {"ar-aging": "customers", "deferred-revenue": "contracts", "mrr-movements": "customers"}


def check_page(
    kind: str, limit: int | None, after: str | None, invoices_after: str | None = None
) -> None:
    """A ReportError naming the field when `limit`, `after` or `invoices_after` cannot apply
    to the report."""
    if limit is not None and not 0 <= limit <= position_max:
        raise ReportError("limit", f"must be a whole number from 0 to {position_max}")
    if after is not None and kind not in PAGED:
        raise ReportError("after", f"{kind} has no list to page (only {', '.join(PAGED)})")
    if after == "":
        raise ReportError("after", "must not be empty")
    if after is not None and "\x00" in after:
        raise ReportError("after", "must not contain NUL (no id does)")
    if invoices_after is not None:
        if kind != "ar-aging":
            raise ReportError("invoices_after", f"{kind} has no invoice list (only ar-aging)")
        parse_invoices_cursor(invoices_after)


def parse_invoices_cursor(text: str) -> tuple[date, int]:
    """AR aging's invoice list is in (due date, position) order; a page's `invoices_next` is
    `DUE_DATE:POSITION` of its last invoice, the next page's `invoices_after`."""
    due, _, position_text = text.partition(":")
    position = whole_number(position_text)
    try:
        if position is None:
            raise ValueError(position_text)
        return date.fromisoformat(due), position
    except ValueError:
        raise ReportError(
            "invoices_after",
            f"{text!r} is not a cursor from invoices_next (YYYY-MM-DD:POSITION)",
        ) from None


def invoices_cursor(due_date: date, position: int) -> str:
    return f"{due_date.isoformat()}:{position}"


async def report(
    conn: AsyncConnection[TupleRow],
    kind: str,
    tenant: str,
    as_of: date,
    *,
    limit: int | None = None,
    after: str | None = None,
    not_before_newest_event: bool = False,
    kpi_cache: KpiCache | None = None,
    invoices_after: str | None = None,
) -> dict[str, Any]:
    """One report as JSON-ready data (money as decimal strings). `limit` caps each list of the
    report and `after` starts its paged list (`PAGED`) after that key; totals cover everything.
    AR aging's invoices (oldest due date first) page by `invoices_after`, the `invoices_next` of
    the page before. `not_before_newest_event`: the report is as of the date of the newest event
    it reflects (the tenant's, at the read models' position) when that is later than `as_of` (a
    dashboard's date under a simulated clock); the answer's `as_of` says which date it is.
    `kpi_cache`: the kpi report reads again only the parts the cache cannot vouch for, and hands
    it what it read."""
    parse_kind(kind)
    check_page(kind, limit, after, invoices_after)
    # Pipeline mode: BEGIN, the settings and the opening query go in one round trip, the queries
    # of `many` in one more, the commit in a third (one each before: on a busy machine every round
    # trip also waits to be scheduled again).
    async with conn.pipeline(), conn.transaction():
        # One snapshot for every query of the report, so its figures agree with each other.
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [tenant])
        reader = _Reader(conn, tenant, as_of)
        await reader.start(not_before_newest_event=not_before_newest_event)
        match kind:
            case "kpi":
                return await reader.kpi(kpi_cache)
            case "ar-aging":
                return await reader.ar_aging(limit, after, invoices_after)
            case "deferred-revenue":
                return await reader.deferred_revenue(limit, after)
            case "trial-balance":
                return await reader.trial_balance()
            case _:
                return await reader.mrr_movements(limit, after)


# --- the SQL ----------------------------------------------------------------------------------
# Parameters by name: tenant, as_of, digits (the currency's minor digits), unit (one minor unit,
# e.g. 0.01), and a few more.


# The segment of each contract line that applies at the end of as_of (the latest started by then)
# and what the line has recognised by then, in whole minor units (rounded); `pending` where only
# Python's arithmetic gives the same digits (an amended ratable segment part-way through, or a
# value outside a bigint). `scheduled`: the line's latest segment, ratable and not empty, so one
# `dr_schedule_months` has. Integer arithmetic on the projector's minor-unit columns is ~2.5x
# faster than the same in numeric, which was most of a KPI report's time.
def _segments_on_as_of(restrict: str = "") -> str:
    """The CTEs `segments`, `pending` and `figures`, of the contracts `restrict` (an SQL
    condition on `contract_id`, starting with AND) lets through: all by default. `figures` has
    recognised (minor units), billed (the currency's unit) and scheduled (minor units)."""
    return f"""
segments AS MATERIALIZED (
    SELECT contract_id, seg_start, seg_end, recognition, base, amount, satisfied_on, scheduled,
        recognised IS NULL AS pending, recognised
    FROM (
        SELECT contract_id, seg_start, seg_end, recognition, base, amount, satisfied_on,
            next_start IS NULL AND recognition = 'ratable' AND seg_end > seg_start AS scheduled,
            CASE
                WHEN recognition = 'point_in_time' THEN CASE
                    WHEN satisfied_on <= %(as_of)s THEN complete_minor ELSE base_minor END
                WHEN %(as_of)s::date >= seg_end - 1 THEN complete_minor
                WHEN amount_minor = 0 THEN base_minor
                WHEN base = 0 AND abs(amount_minor) <= 9223372036854775807 / (seg_end - seg_start)
                THEN ledger_spread_minor(
                    amount_minor, %(as_of)s::date - seg_start + 1, seg_end - seg_start)
            END AS recognised
        FROM dr_segments
        WHERE tenant_id = %(tenant)s AND seg_start <= %(as_of)s
            AND (next_start IS NULL OR next_start > %(as_of)s){restrict}
    ) applying
),
pending AS (
    SELECT contract_id, json_agg(json_build_object(
        'seg_start', seg_start, 'seg_end', seg_end, 'recognition', recognition,
        'base', base::text, 'amount', amount::text, 'satisfied_on', satisfied_on,
        'scheduled', scheduled
    )) AS segments
    FROM segments WHERE pending GROUP BY contract_id
),
-- Per contract: its segments' sums (bigints) and its billing by as_of, each grouped on its own
-- (one grouping over both, numeric and bigint mixed, cost twice as much).
figures AS (
    SELECT coalesce(r.contract_id, b.contract_id) AS contract_id,
        coalesce(r.recognised, 0) * %(unit)s AS recognised, coalesce(b.billed, 0) AS billed,
        coalesce(r.scheduled, 0) * %(unit)s AS scheduled, coalesce(r.pending, false) AS pending
    FROM (
        SELECT contract_id, sum(recognised) AS recognised,
            sum(recognised) FILTER (WHERE scheduled) AS scheduled, bool_or(pending) AS pending
        FROM segments GROUP BY contract_id
    ) r
    FULL JOIN (
        SELECT contract_id, sum(amount) AS billed FROM dr_billing
        WHERE tenant_id = %(tenant)s AND day <= %(as_of)s{restrict}
        GROUP BY contract_id
    ) b ON b.contract_id = r.contract_id
)
"""


# Over all contracts, by the end of as_of: recognised, the part not billed by then (unbilled
# revenue, per contract), billed, and what the lines in `dr_schedule_months` recognised, over the
# contracts SQL has whole; the others with their pending segments; and recognised by the end of
# the month, and of the year, before as_of's. Billing of a contract without segments yet only
# lowers its difference, as before (max(recognised - billed, 0)).
_recognition = f"""
WITH {_segments_on_as_of()}
SELECT 'whole', sum(f.recognised), sum(greatest(f.recognised - f.billed, 0)), sum(f.billed),
    sum(f.scheduled), NULL
FROM figures f WHERE NOT f.pending
UNION ALL
SELECT 'pending', f.recognised, NULL, f.billed, f.scheduled, p.segments
FROM figures f JOIN pending p ON p.contract_id = f.contract_id
UNION ALL
SELECT 'months', coalesce(sum(amount) FILTER (WHERE month < %(month)s), 0),
    coalesce(sum(amount) FILTER (WHERE month < %(year)s), 0), NULL, NULL, NULL
FROM dr_recognised_months WHERE tenant_id = %(tenant)s
"""

# The deferred revenue report lists the contracts started by as_of or billed by then (a contract
# recognises nothing before its start: no segment starts before it), in code point order.
_listed_contracts = """
listed AS (
    SELECT c.contract_id, c.customer_id FROM dr_contracts c
    WHERE c.tenant_id = %(tenant)s AND (c.start_date <= %(as_of)s OR (
        SELECT sum(b.amount) FROM dr_billing b WHERE b.tenant_id = %(tenant)s
            AND b.contract_id = c.contract_id AND b.day <= %(as_of)s
    ) <> 0)
)"""

# A page of them (`after` a contract id, at most `limit`; all when both are null) with their
# figures, read from their own segments and billing only. Billing and rounded recognition are
# whole minor units: round() only gives them the currency's digits.
_contract_figures = f"""
WITH {_listed_contracts},
page AS MATERIALIZED (
    SELECT contract_id, customer_id FROM listed
    WHERE %(after)s::text IS NULL OR contract_id COLLATE "C" > %(after)s::text
    ORDER BY contract_id COLLATE "C" LIMIT %(limit)s
),
{_segments_on_as_of(" AND contract_id IN (SELECT contract_id FROM page)")}
SELECT c.contract_id, c.customer_id, round(coalesce(f.billed, 0), %(digits)s),
    round(coalesce(f.recognised, 0), %(digits)s),
    round(greatest(coalesce(f.billed, 0) - coalesce(f.recognised, 0), 0), %(digits)s),
    round(greatest(coalesce(f.recognised, 0) - coalesce(f.billed, 0), 0), %(digits)s),
    p.segments
FROM page c
LEFT JOIN figures f ON f.contract_id = c.contract_id
LEFT JOIN pending p ON p.contract_id = c.contract_id
"""

# How many contracts the report lists, and how many of them come after the page's cursor.
_listed_count = f"""
WITH {_listed_contracts}
SELECT count(*),
    count(*) FILTER (WHERE %(after)s::text IS NULL OR contract_id COLLATE "C" > %(after)s::text)
FROM listed
"""

# The waterfall from the schedules started by as_of: the months after as_of's month as they are,
# the earlier ones folded into as_of's month (from which the reader takes what the lines had
# recognised by as_of).
_waterfall_months = """
SELECT greatest(month, %(month)s::date), sum(amount) FROM dr_schedule_months
WHERE tenant_id = %(tenant)s AND seg_start <= %(as_of)s GROUP BY 1
"""

# Lines amended after as_of: their segments as they stood on as_of.
_lines_changed_later = """
SELECT s.contract_id, s.line_id, s.seg_start, s.seg_end, s.recognition, s.base, s.amount,
    s.satisfied_on
FROM dr_segments s
WHERE s.tenant_id = %(tenant)s AND s.seg_start <= %(as_of)s AND (s.contract_id, s.line_id) IN (
    SELECT contract_id, line_id FROM dr_segments
    WHERE tenant_id = %(tenant)s AND seg_start <= %(as_of)s AND next_start > %(as_of)s
)
ORDER BY s.contract_id, s.line_id, s.seg_start
"""

# Invoices whose open amount at the end of as_of differs from today's: issued after it (not yet
# receivable then), or changed after it (open then = open now + what changed since). `corrections`
# turns today's aggregates into as_of's, by customer and due date.
_ar_corrections = """
later AS MATERIALIZED (
    SELECT invoice_id, sum(amount) AS amount FROM ar_changes
    WHERE tenant_id = %(tenant)s AND day > %(as_of)s GROUP BY invoice_id
),
affected AS MATERIALIZED (
    SELECT i.invoice_id, i.customer_id, i.due_date, i."position", i.open AS open_now,
        CASE WHEN i.issue_date > %(as_of)s THEN 0 ELSE i.open + coalesce(l.amount, 0) END
            AS open_then
    FROM (
        SELECT invoice_id FROM later
        UNION SELECT invoice_id FROM ar_invoices
        WHERE tenant_id = %(tenant)s AND issue_date > %(as_of)s
    ) a
    JOIN ar_invoices i ON i.tenant_id = %(tenant)s AND i.invoice_id = a.invoice_id
    LEFT JOIN later l ON l.invoice_id = a.invoice_id
),
corrections AS (
    SELECT customer_id, due_date, open_then - open_now AS open,
        (open_then <> 0)::integer - (open_now <> 0)::integer AS invoices
    FROM affected
)
"""

# Days past due on as_of, by bucket: current (not yet due), 1-30, ..., over 120. AR amounts are
# whole minor units, so round() rounds nothing: it gives each sum the currency's digits, which is
# how `_Reader.minor_units` can print it as it stands.
_bucket_sums = """
round(coalesce(sum(open) FILTER (WHERE due_date >= %(as_of)s), 0), %(digits)s),
round(coalesce(sum(open) FILTER (
    WHERE due_date BETWEEN %(as_of)s::date - 30 AND %(as_of)s::date - 1), 0), %(digits)s),
round(coalesce(sum(open) FILTER (
    WHERE due_date BETWEEN %(as_of)s::date - 60 AND %(as_of)s::date - 31), 0), %(digits)s),
round(coalesce(sum(open) FILTER (
    WHERE due_date BETWEEN %(as_of)s::date - 90 AND %(as_of)s::date - 61), 0), %(digits)s),
round(coalesce(sum(open) FILTER (
    WHERE due_date BETWEEN %(as_of)s::date - 120 AND %(as_of)s::date - 91), 0), %(digits)s),
round(coalesce(sum(open) FILTER (WHERE due_date < %(as_of)s::date - 120), 0), %(digits)s)
"""

# The customers with an open invoice on as_of: every invoice's customer has a row in
# `ar_open_by_customer` from its issue on (rows are never deleted), its open invoices counted now
# and corrected to as_of. Pages go in code point order (COLLATE "C", as Python sorts), so a page
# follows its cursor whatever the database's collation.
_owing_customers = """
customer_corrections AS (
    SELECT customer_id, sum(invoices) AS invoices FROM corrections GROUP BY customer_id
),
owing AS (
    SELECT o.customer_id FROM ar_open_by_customer o
    LEFT JOIN customer_corrections c ON c.customer_id = o.customer_id
    WHERE o.tenant_id = %(tenant)s AND o.invoices + coalesce(c.invoices, 0) > 0
)"""

# A page of those customers (`after` a customer id, at most `limit`; all when both are null) with
# their buckets and unapplied cash, read from their own (customer, due date) cells only: summing
# every cell of a tenant with 100,000 open invoices is what made the unpaged report slow. The
# tenant's totals come from `ar_open_by_due_date` (`_aging_totals`). Sorted in Python.
_aging_by_customer = f"""
WITH {_ar_corrections}, {_owing_customers},
page AS MATERIALIZED (
    SELECT customer_id FROM owing
    WHERE %(after)s::text IS NULL OR customer_id COLLATE "C" > %(after)s::text
    ORDER BY customer_id COLLATE "C" LIMIT %(limit)s
),
cells AS (
    SELECT customer_id, due_date, open, invoices FROM ar_open_by_customer_and_due_date
    WHERE tenant_id = %(tenant)s AND invoices <> 0 AND customer_id IN (SELECT customer_id FROM page)
    UNION ALL SELECT customer_id, due_date, open, invoices FROM corrections
    WHERE customer_id IN (SELECT customer_id FROM page)
)
SELECT aged.*, credits.unapplied FROM (
    SELECT customer_id, {_bucket_sums}, round(sum(open), %(digits)s)
    FROM cells GROUP BY customer_id HAVING sum(invoices) > 0
) aged
LEFT JOIN (
    SELECT customer_id, sum(amount) AS unapplied FROM ar_credits
    WHERE tenant_id = %(tenant)s AND day <= %(as_of)s
        AND customer_id IN (SELECT customer_id FROM page)
    GROUP BY customer_id
) credits ON credits.customer_id = aged.customer_id
"""

# How many customers owe on as_of, and how many of them come after the page's cursor.
_owing_count = f"""
WITH {_ar_corrections}, {_owing_customers}
SELECT count(*),
    count(*) FILTER (WHERE %(after)s::text IS NULL OR customer_id COLLATE "C" > %(after)s::text)
FROM owing
"""

# The tenant's buckets and its number of open invoices on as_of.
_aging_totals = f"""
WITH {_ar_corrections},
cells AS (
    SELECT due_date, open, invoices FROM ar_open_by_due_date WHERE tenant_id = %(tenant)s
    UNION ALL SELECT due_date, open, invoices FROM corrections
)
SELECT {_bucket_sums}, coalesce(sum(invoices), 0) FROM cells
"""

# The open invoices on as_of, oldest due date first (after the cursor's due date and position;
# '-infinity' and 0 for the first page): the head of the open invoices' index (their
# amounts corrected by what changed since), and those closed since as_of.
_open_invoices = f"""
WITH {_ar_corrections}
(
    SELECT i.invoice_id, i.customer_id, i.due_date, i."position",
        i.open + coalesce(l.amount, 0) AS open
    FROM ar_invoices i LEFT JOIN later l ON l.invoice_id = i.invoice_id
    WHERE i.tenant_id = %(tenant)s AND i.open <> 0 AND i.issue_date <= %(as_of)s
        AND i.open + coalesce(l.amount, 0) <> 0
        AND (i.due_date, i."position") > (%(inv_due)s::date, %(inv_position)s::bigint)
    ORDER BY i.due_date, i."position" LIMIT %(limit)s
)
UNION ALL
SELECT invoice_id, customer_id, due_date, "position", open_then FROM affected
WHERE open_now = 0 AND open_then <> 0
    AND (due_date, "position") > (%(inv_due)s::date, %(inv_position)s::bigint)
ORDER BY 3, 4 LIMIT %(limit)s
"""

# KPIs: receivables (all, overdue, over 90 days past due, due within 30 days), customers with a
# live contract or an open receivable, and live contracts.
_receivables_and_customers = f"""
WITH {_ar_corrections},
due AS (
    SELECT due_date, open FROM ar_open_by_due_date WHERE tenant_id = %(tenant)s
    UNION ALL SELECT due_date, open FROM corrections
),
receivables AS (
    SELECT coalesce(sum(open), 0) AS ar,
        coalesce(sum(open) FILTER (WHERE due_date < %(as_of)s), 0) AS overdue,
        coalesce(sum(open) FILTER (WHERE due_date < %(as_of)s::date - 90), 0) AS over_90,
        coalesce(sum(open) FILTER (WHERE due_date <= %(as_of)s::date + 30), 0) AS due_30
    FROM due
),
live AS (
    SELECT customer_id FROM dr_contracts
    WHERE tenant_id = %(tenant)s AND start_date <= %(as_of)s AND %(as_of)s < end_date
        AND (cancelled_on IS NULL OR %(as_of)s < cancelled_on)
), {_owing_customers}
SELECT ar, overdue, over_90, due_30,
    (SELECT count(*) FROM (SELECT customer_id FROM live UNION SELECT customer_id FROM owing) c),
    (SELECT count(*) FROM live)
FROM receivables
"""

# KPIs: the payables due within 30 days of as_of (overdue ones included), as they stood on as_of.
_payables_due = """
SELECT coalesce(sum(amount), 0) FROM gl_payables_by_due_date
WHERE tenant_id = %(tenant)s AND day <= %(as_of)s AND due_date <= %(as_of)s::date + 30
"""

# KPIs: MRR now, and over the customers that had MRR at the window's start, then and now (NRR)
# and the lower of the two (GRR); each customer's MRR rounded as `mrr_by_customer` rounds it.
_mrr_cohort = """
WITH per_customer AS (
    SELECT ledger_round_half_even(at_start, %(digits)s) AS at_start,
        ledger_round_half_even(at_end, %(digits)s) AS at_end
    FROM (
        SELECT coalesce(sum(mrr) FILTER (
                WHERE seg_start <= %(start)s AND %(start)s < seg_end), 0) AS at_start,
            coalesce(sum(mrr) FILTER (
                WHERE seg_start <= %(as_of)s AND %(as_of)s < seg_end), 0) AS at_end
        FROM mrr_segments WHERE tenant_id = %(tenant)s AND seg_start <= %(as_of)s
        GROUP BY customer_id
        OFFSET 0
    ) unrounded
)
SELECT coalesce(sum(at_end), 0), coalesce(sum(at_start) FILTER (WHERE at_start > 0), 0),
    coalesce(sum(at_end) FILTER (WHERE at_start > 0), 0),
    coalesce(sum(least(at_start, at_end)) FILTER (WHERE at_start > 0), 0)
FROM per_customer
"""


Query = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class _Recognition:
    """What the contracts had recognised by the end of a day, the part of it billed by then
    (moved out of deferred revenue) and the part not billed (unbilled revenue, per contract);
    what they had billed, and what their scheduled lines (`dr_schedule_months`) recognised."""

    recognised: Decimal
    from_deferred: Decimal
    unbilled: Decimal
    billed: Decimal  # by the end of the day
    scheduled: Decimal  # recognised by the lines that `dr_schedule_months` holds


@dataclass(frozen=True)
class _Flow:
    """Credits - debits on some accounts (a trailing ':' is a prefix) over [start, as_of]."""

    name: str
    start: date
    accounts: tuple[str, ...]
    sources: tuple[str, ...] | None = None


class _Reader:
    def __init__(self, conn: AsyncConnection[TupleRow], tenant: str, as_of: date) -> None:
        self.conn = conn
        self.tenant = tenant
        self.as_of = as_of
        self.currency: str | None = None
        self.digits = 2
        self.quantum = Decimal("0.01")
        self.position = 0
        self.positions: dict[str, int] = {}

    async def start(self, *, not_before_newest_event: bool = False) -> None:
        """The tenant's currency and read-model position; with `not_before_newest_event`, as_of
        moves on to the date (UTC) of the event at that position when that is later.

        That event is found by its position (the primary key), not as the tenant's newest by
        `ORDER BY position DESC LIMIT 1`: under row-level security PostgreSQL does not walk
        `events_tenant_position` backwards for that, and a generic plan read all of the tenant's
        events and sorted them (16-18 ms of every KPI state at 20,000 events, growing with the
        store; the pkey lookup reads one row)."""
        [(currency, position, positions, newest)] = await self._all(
            "WITH state AS (SELECT coalesce(max(position), 0) AS position,"
            "  coalesce(jsonb_object_agg(projection, position), '{}') AS positions"
            "  FROM projection_state"
            "  WHERE tenant_id = %(tenant)s AND projection = ANY(%(projections)s))"
            " SELECT (SELECT currency FROM gl_tenants WHERE tenant_id = %(tenant)s),"
            " state.position, state.positions,"
            " CASE WHEN %(newest)s THEN (SELECT (time AT TIME ZONE 'UTC')::date FROM events"
            "  WHERE events.position = state.position) END"
            " FROM state",
            {
                "tenant": self.tenant,
                "projections": list(REPORT_PROJECTIONS),
                "newest": not_before_newest_event,
            },
        )
        if newest is not None and newest > self.as_of:
            self.as_of = newest
        if currency is not None:
            self.currency = currency
            self.digits = acc.digits_of(currency)
            self.quantum = Decimal(1).scaleb(-self.digits)
        self.position = int(position)
        self.positions = {name: int(value) for name, value in positions.items()}

    async def _all(self, query: str, params: Any) -> list[tuple[Any, ...]]:
        cursor = await self.conn.execute(query, params)
        return await cursor.fetchall()

    async def many(self, *queries: Query) -> list[list[tuple[Any, ...]]]:
        """Each query's rows, the queries sent together (pipeline mode) and answered in one round
        trip: on a busy machine every round trip also waits to be scheduled again (the KPIs' five
        queries took 45-50 ms one by one and 29-35 ms together at a load of 2.5 on 2 cores)."""
        async with self.conn.pipeline():
            cursors = []
            for query, params in queries:
                cursor = self.conn.cursor()
                await cursor.execute(query, params)
                cursors.append(cursor)
        return [await cursor.fetchall() for cursor in cursors]

    def parameters(self, **more: Any) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "as_of": self.as_of,
            "digits": self.digits,
            "unit": self.quantum,  # one minor unit
            **more,
        }

    def money(self, amount: Decimal) -> str:
        return f"{self.round(amount):f}"

    @staticmethod
    def minor_units(amount: Decimal) -> str:
        """`money` of an amount that SQL has already rounded to the currency's digits (so its
        exponent is -digits and `str` writes it plainly, as `money` would): ~6x cheaper, which
        counts over thousands of customers or contracts."""
        return str(amount)

    def round(self, amount: Decimal) -> Decimal:
        return amount.quantize(self.quantum, rounding=ROUND_HALF_EVEN)

    def head(self, **fields: Any) -> dict[str, Any]:
        return {"tenant": self.tenant, **fields, "currency": self.currency}

    # --- general ledger --------------------------------------------------------------------

    def ledger_query(self) -> Query:
        """account -> (debits, credits) posted by the end of as_of."""
        return (
            "SELECT account, sum(debit), sum(credit) FROM gl_daily"
            " WHERE tenant_id = %(tenant)s AND day <= %(as_of)s GROUP BY account",
            self.parameters(),
        )

    def balances(
        self, ledger: list[tuple[Any, ...]], recognition: _Recognition
    ) -> dict[str, tuple[Decimal, Decimal]]:
        """account -> (debits, credits) by the end of as_of: `ledger_query`'s rows with the
        recognition to date, which is derived, not posted."""
        totals = {row[0]: (row[1], row[2]) for row in ledger}

        def move(account: str, debit: Decimal, credit: Decimal) -> None:
            old = totals.get(account, (zero, zero))
            totals[account] = (old[0] + debit, old[1] + credit)

        if recognition.recognised:
            move(acc.REVENUE, zero, recognition.recognised)
            move(acc.DEFERRED, recognition.from_deferred, zero)
            move(acc.UNBILLED, recognition.unbilled, zero)
        return totals

    def balance(self, totals: dict[str, tuple[Decimal, Decimal]], account: str) -> Decimal:
        debit, credit = totals.get(account, (zero, zero))
        return debit - credit if acc.is_debit_normal(account) else credit - debit

    async def trial_balance(self) -> dict[str, Any]:
        ledger, recognition = await self.many(self.ledger_query(), self.recognition_query())
        totals = self.balances(ledger, self.recognition(recognition)[0])
        accounts = []
        total_debit = total_credit = zero
        for account in sorted(totals):
            debit, credit = totals[account]
            net = debit - credit
            column_debit, column_credit = (net, zero) if net >= 0 else (zero, -net)
            total_debit += column_debit
            total_credit += column_credit
            accounts.append(
                {
                    "account": account,
                    "debit": self.money(column_debit),
                    "credit": self.money(column_credit),
                    "balance": self.money(self.balance(totals, account)),
                }
            )
        return {
            **self.head(as_of=self.as_of.isoformat(), position=self.position),
            "accounts": accounts,
            "total_debit": self.money(total_debit),
            "total_credit": self.money(total_credit),
            "balanced": self.round(total_debit) == self.round(total_credit),
        }

    def flows_query(self, *flows: _Flow) -> Query:
        """Each flow's credits - debits, in one pass over the days from the earliest start."""
        columns, params = [], self.parameters(earliest=min(flow.start for flow in flows))
        for index, flow in enumerate(flows):
            exact = [a for a in flow.accounts if not a.endswith(":")]
            prefixes = [a + "%" for a in flow.accounts if a.endswith(":")]
            condition = (
                f"day >= %(start{index})s AND (account = ANY(%(exact{index})s)"
                f" OR account LIKE ANY(%(prefixes{index})s))"
            )
            params.update({f"start{index}": flow.start, f"exact{index}": exact})
            params[f"prefixes{index}"] = prefixes
            if flow.sources is not None:
                condition += f" AND source = ANY(%(sources{index})s)"
                params[f"sources{index}"] = list(flow.sources)
            columns.append(f"coalesce(sum(credit - debit) FILTER (WHERE {condition}), 0)")
        return (
            f"SELECT {', '.join(columns)} FROM gl_daily WHERE tenant_id = %(tenant)s"
            " AND day BETWEEN %(earliest)s AND %(as_of)s",
            params,
        )

    # --- deferred revenue ------------------------------------------------------------------

    def recognition_query(self) -> Query:
        month_start = self.as_of.replace(day=1)
        return _recognition, self.parameters(month=month_start, year=month_start.replace(month=1))

    def recognition(self, rows: list[tuple[Any, ...]]) -> tuple[_Recognition, Decimal, Decimal]:
        """From `recognition_query`'s rows, over all contracts: by the end of as_of, recognised
        (rounded per line) and how much of it was billed before and how much not (per contract),
        billed, and recognised by the scheduled lines; and recognised by the end of the month and
        of the year before as_of's."""
        recognised = unbilled = billed = before_month = before_year = zero
        scheduled: list[Decimal] = []
        for kind, first, second, third, fourth, pending in rows:
            if kind == "whole":  # the contracts SQL has whole
                recognised += first or zero
                unbilled += second or zero
                billed += third or zero
                scheduled.append(fourth or zero)
            elif kind == "pending":  # a contract with segments left to Python
                contract = first + self.pending_recognised(pending, scheduled)
                recognised += contract
                unbilled += max(contract - third, zero)
                billed += third
                scheduled.append(fourth)
            else:  # the months: recognised by the end of the month, and the year, before
                before_month, before_year = first, second
        # min(recognised, billed) per contract is recognised less its unbilled part.
        found = _Recognition(
            recognised, recognised - unbilled, unbilled, billed, sum(scheduled, zero)
        )
        return found, before_month, before_year

    def pending_recognised(
        self, segments: list[dict[str, Any]], scheduled: list[Decimal] | None = None
    ) -> Decimal:
        """What the segments SQL left to Python recognised by the end of as_of, each rounded
        (`accounting.recognised_in_segment` itself); those `scheduled` are appended to it."""
        total = zero
        for segment in segments:
            recognised = self.round(acc.recognised_in_segment(segment, self.as_of))
            total += recognised
            if segment["scheduled"] and scheduled is not None:
                scheduled.append(recognised)
        return total

    async def deferred_revenue(
        self, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        month_start = self.as_of.replace(day=1)
        page = self.parameters(month=month_start, limit=limit, after=after)
        recognition_rows, contracts, [counts], schedules, changed_later = await self.many(
            self.recognition_query(),
            (_contract_figures, page),
            (_listed_count, page),
            (_waterfall_months, page),
            (_lines_changed_later, page),
        )
        recognition = self.recognition(recognition_rows)[0]
        listed = []
        for contract_id, customer_id, *amounts, pending in contracts:
            if pending is None:
                texts = [self.minor_units(amount) for amount in amounts]
            else:
                billed = amounts[0]
                recognised = amounts[1] + self.pending_recognised(pending)
                deferred, unbilled = max(billed - recognised, zero), max(recognised - billed, zero)
                texts = [self.money(amount) for amount in (billed, recognised, deferred, unbilled)]
            listed.append(
                {
                    "contract_id": contract_id,
                    "customer_id": customer_id,
                    "billed": texts[0],
                    "recognized": texts[1],
                    "deferred": texts[2],
                    "unbilled": texts[3],
                }
            )
        listed.sort(key=lambda contract: contract["contract_id"])
        # Per contract deferred - unbilled = billed - recognised, so over all of them too.
        billed, recognised, unbilled = (
            recognition.billed,
            recognition.recognised,
            recognition.unbilled,
        )
        totals = {
            "billed": billed,
            "recognized": recognised,
            "deferred": billed - recognised + unbilled,
            "unbilled": unbilled,
        }
        return {
            **self.head(as_of=self.as_of.isoformat(), position=self.position),
            **{name: self.money(amount) for name, amount in totals.items()},
            "contracts": listed,
            **_page("contracts", [contract["contract_id"] for contract in listed], *counts),
            "waterfall": self.waterfall(schedules, changed_later, recognition.scheduled),
        }

    def waterfall(
        self,
        schedules: list[tuple[Any, ...]],
        changed_later: list[tuple[Any, ...]],
        scheduled: Decimal,
    ) -> list[dict[str, str]]:
        """What the schedules known on as_of still recognise, per month after as_of: from the
        rows of `_waterfall_months`, less `scheduled` (what those lines had recognised by as_of),
        and from those of `_lines_changed_later`."""
        months: dict[str, Decimal] = {}
        for month, amount in schedules:
            months[month.strftime("%Y-%m")] = amount
        if scheduled:
            key = self.as_of.strftime("%Y-%m")
            months[key] = months.get(key, zero) - scheduled
        lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for contract_id, line_id, *segment in changed_later:
            seg_start, seg_end, recognition, base, amount, satisfied_on = segment
            lines.setdefault((contract_id, line_id), []).append(
                {
                    "seg_start": seg_start.isoformat(),
                    "seg_end": seg_end.isoformat(),
                    "recognition": recognition,
                    "base": base,
                    "amount": amount,
                    "satisfied_on": satisfied_on,
                }
            )
        for known in lines.values():
            self.line_waterfall(known, months)
        return [
            {"month": month, "amount": self.money(amount)}
            for month, amount in sorted(months.items())
            if amount
        ]

    def line_waterfall(self, known: list[dict[str, Any]], months: dict[str, Decimal]) -> None:
        """Add what one line's segments known on as_of still recognise, per month, to `months`."""
        # As the line stood on as_of: a later amendment may change its recognition.
        if max(known, key=lambda s: s["seg_start"])["recognition"] != "ratable":
            return
        last_end = max(date.fromisoformat(s["seg_end"]) for s in known) - acc.one_day
        previous = self.round(acc.recognised_by_line(known, self.as_of))
        month_end = acc.month_end(self.as_of)
        while True:
            boundary = min(month_end, last_end)
            if boundary > self.as_of:
                current = self.round(acc.recognised_by_line(known, boundary))
                key = boundary.strftime("%Y-%m")
                months[key] = months.get(key, zero) + current - previous
                previous = current
            if month_end >= last_end:
                break
            month_end = acc.month_end(month_end + acc.one_day)

    # --- AR aging --------------------------------------------------------------------------

    async def ar_aging(
        self, limit: int | None = None, after: str | None = None, invoices_after: str | None = None
    ) -> dict[str, Any]:
        page = self.parameters(limit=limit, after=after)
        # One invoice more than the page, to know whether another page follows.
        cursor_due, cursor_position = (
            parse_invoices_cursor(invoices_after) if invoices_after else ("-infinity", 0)
        )
        invoice_page = self.parameters(
            limit=None if limit is None else limit + 1,
            inv_due=str(cursor_due),
            inv_position=cursor_position,
        )
        (
            aging,
            [(*tenant_amounts, invoices_total)],
            invoices,
            [(unapplied_total,)],
            [counts],
        ) = await self.many(
            (_aging_by_customer, page),
            (_aging_totals, self.parameters()),
            (_open_invoices, invoice_page),
            (
                "SELECT coalesce(sum(amount), 0) FROM ar_credits"
                " WHERE tenant_id = %(tenant)s AND day <= %(as_of)s",
                self.parameters(),
            ),
            (_owing_count, page),
        )
        buckets = dict(zip(BUCKETS, tenant_amounts, strict=True))
        listed = []
        more_invoices = limit is not None and len(invoices) > limit
        if more_invoices:
            del invoices[limit:]
        for invoice_id, customer_id, due_date, _position, open_amount in invoices:
            days = (self.as_of - due_date).days
            listed.append(
                {
                    "invoice_id": invoice_id,
                    "customer_id": customer_id,
                    "due_date": due_date.isoformat(),
                    "days_past_due": max(days, 0),
                    "open": self.money(open_amount),
                    "bucket": bucket_of(days),
                }
            )
        total = sum(buckets.values(), zero)
        money = self.money
        no_credit = money(zero)
        aging.sort()
        return {
            **self.head(as_of=self.as_of.isoformat(), position=self.position),
            "buckets": {name: money(amount) for name, amount in buckets.items()},
            "total": money(total),
            "overdue": money(total - buckets["current"]),
            "unapplied": money(unapplied_total),
            "net": money(total - unapplied_total),
            "customers": [
                {
                    "customer_id": customer_id,
                    "buckets": dict(zip(BUCKETS, map(self.minor_units, amounts), strict=True)),
                    "total": self.minor_units(customer_total),
                    "unapplied": money(unapplied) if unapplied else no_credit,
                }
                for customer_id, *amounts, customer_total, unapplied in aging
            ],
            **_page("customers", [row[0] for row in aging], *counts),
            "invoices": listed,
            "invoices_total": int(invoices_total),
            "invoices_next": invoices_cursor(invoices[-1][2], invoices[-1][3])
            if more_invoices and invoices
            else None,
        }

    # --- MRR -------------------------------------------------------------------------------

    async def mrr_by_customer(self, *days: date) -> dict[str, list[Decimal]]:
        """customer -> MRR at the end of each day, rounded per customer."""
        columns = ", ".join(
            "coalesce(sum(mrr) FILTER (WHERE seg_start <= %s AND %s < seg_end), 0)" for _ in days
        )
        params: list[Any] = []
        for day in days:
            params += [day, day]
        rows = await self._all(
            f"SELECT customer_id, {columns} FROM mrr_segments"
            " WHERE tenant_id = %s AND seg_start <= %s GROUP BY customer_id",
            [*params, self.tenant, max(days)],
        )
        return {row[0]: [self.round(value) for value in row[1:]] for row in rows}

    async def mrr_movements(
        self, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        month_start = self.as_of.replace(day=1)
        before = month_start - acc.one_day
        end = min(acc.month_end(self.as_of), self.as_of)
        mrr = await self.mrr_by_customer(before, end)
        earlier = {
            row[0]
            for row in await self._all(
                "SELECT DISTINCT customer_id FROM mrr_segments WHERE tenant_id = %s"
                " AND seg_start <= %s AND mrr > 0",
                [self.tenant, before],
            )
        }
        movements = dict.fromkeys(
            ("new", "reactivation", "expansion", "contraction", "churn"), zero
        )
        customers = []
        starting = ending = zero
        for customer_id, (start, finish) in sorted(mrr.items()):
            starting += start
            ending += finish
            if start == finish:
                continue
            if start == 0:
                kind = "reactivation" if customer_id in earlier else "new"
            elif finish == 0:
                kind = "churn"
            else:
                kind = "expansion" if finish > start else "contraction"
            movements[kind] += abs(finish - start)
            customers.append(
                {
                    "customer_id": customer_id,
                    "starting_mrr": self.money(start),
                    "ending_mrr": self.money(finish),
                    "movement": kind,
                    "change": self.money(finish - start),
                }
            )
        return {
            **self.head(month=month_start.strftime("%Y-%m"), as_of=self.as_of.isoformat()),
            "position": self.position,
            "starting_mrr": self.money(starting),
            **{name: self.money(amount) for name, amount in movements.items()},
            "ending_mrr": self.money(ending),
            **_paged("customers", customers, "customer_id", limit, after),
        }

    # --- KPIs ------------------------------------------------------------------------------

    async def kpi(self, cache: KpiCache | None = None) -> dict[str, Any]:
        flows_asked = self.kpi_flows()
        queries = {
            "ledger": self.ledger_query(),
            "recognition": self.recognition_query(),
            "flows": self.flows_query(*flows_asked),
            "receivables": (_receivables_and_customers, self.parameters()),
            "mrr": (_mrr_cohort, self.parameters(start=_months_before(self.as_of, 12))),
            "payables_due": (_payables_due, self.parameters()),
        }
        reused = {} if cache is None else cache.reusable(self.positions, self.as_of, self.digits)
        asked = [name for name in queries if name not in reused]
        answers = dict(zip(asked, await self.many(*(queries[name] for name in asked)), strict=True))
        found = {**reused, **answers}
        if cache is not None:
            parts = {name: found[name] for name in KPI_PARTS}
            cache.computed(KpiSnapshot(dict(self.positions), self.as_of, self.digits, parts))
        ledger, recognised, flow_rows, receivables, mrr, payables = (
            found[name] for name in queries
        )
        recognition, before_month, before_year = self.recognition(recognised)
        totals = self.balances(ledger, recognition)
        flows = {flow.name: value for flow, value in zip(flows_asked, flow_rows[0], strict=True)}
        revenue_mtd = flows["revenue_mtd"] + (recognition.recognised - before_month)
        revenue_ytd = flows["revenue_ytd"] + (recognition.recognised - before_year)
        billings_90_gross = flows["billings_90"]
        expenses_mtd = -flows["expenses_mtd"]
        expenses_90_gross = flows["expenses_90"]
        [(ar, overdue, over_90, due_30, customers, active_contracts)] = receivables
        cash = self.balance(totals, acc.CASH)
        ap = self.balance(totals, acc.PAYABLE)
        deferred = self.balance(totals, acc.DEFERRED)
        tax_payable = self.balance(totals, acc.TAX_PAYABLE)
        [(mrr_now, cohort_start, cohort_now, cohort_kept)] = mrr
        share_over_90 = over_90 / ar if ar else None
        liabilities = ap + deferred + tax_payable
        net_income = revenue_mtd - expenses_mtd
        kpis = {
            "revenue_mtd": self.money(revenue_mtd),
            "revenue_ytd": self.money(revenue_ytd),
            "billings_mtd": self.money(flows["billings_mtd"]),
            "expenses_mtd": self.money(expenses_mtd),
            "net_income_mtd": self.money(net_income),
            "margin_mtd": _ratio(net_income / revenue_mtd) if revenue_mtd else None,
            "cash": self.money(cash),
            "ar": self.money(ar),
            "ar_overdue": self.money(overdue),
            "ar_over_90_share": _ratio(share_over_90) if share_over_90 is not None else None,
            "unapplied": self.money(self.balance(totals, acc.CUSTOMER_CREDITS)),
            "ap": self.money(ap),
            "deferred_revenue": self.money(deferred),
            "unbilled_revenue": self.money(self.balance(totals, acc.UNBILLED)),
            "dso": _days(ar / billings_90_gross * 90) if billings_90_gross > 0 else None,
            "dpo": _days(ap / expenses_90_gross * 90) if expenses_90_gross > 0 else None,
            "current_ratio": _ratio((cash + ar) / liabilities) if liabilities > 0 else None,
            "mrr": self.money(mrr_now),
            "arr": self.money(mrr_now * 12),
            "nrr": _ratio(cohort_now / cohort_start) if cohort_start else None,
            "grr": _ratio(cohort_kept / cohort_start) if cohort_start else None,
            "customers": customers,
            "active_contracts": active_contracts,
        }
        return {
            **self.head(as_of=self.as_of.isoformat(), position=self.position),
            "kpis": kpis,
            "alerts": self.alerts(share_over_90, cash, due_30, payables[0][0]),
        }

    def kpi_flows(self) -> tuple[_Flow, ...]:
        """What the general ledger's accounts took in over the month, the year and the last 90
        days: direct revenue, billings (net of credit notes and voids), expenses, purchases."""
        month_start = self.as_of.replace(day=1)
        year_start, last_90 = month_start.replace(month=1), self.as_of - timedelta(days=89)
        billing_sources = ("invoice.issued", "credit_note.issued", "invoice.voided")
        billed = (acc.REVENUE, acc.DEFERRED)
        return (
            _Flow("revenue_mtd", month_start, (acc.REVENUE,)),
            _Flow("revenue_ytd", year_start, (acc.REVENUE,)),
            _Flow("billings_mtd", month_start, billed, billing_sources),
            _Flow("billings_90", last_90, (*billed, acc.TAX_PAYABLE), billing_sources),
            _Flow("expenses_mtd", month_start, (acc.EXPENSE_PREFIX, acc.BAD_DEBT)),
            _Flow("expenses_90", last_90, (acc.PAYABLE,), ("expense.recorded",)),
        )

    def alerts(
        self,
        share_over_90: Decimal | None,
        cash: Decimal,
        due_30: Decimal,
        payables_due_30: Decimal,
    ) -> list[dict[str, str]]:
        """Receivables over 90 days past due above 20 % of AR; cash + receivables due within 30
        days - payables due within 30 days below zero (overdue ones included in both)."""
        alerts = []
        if share_over_90 is not None and share_over_90 > Decimal("0.2"):
            alerts.append(
                {
                    "code": "ar_over_90_days",
                    "message": f"{_ratio(share_over_90 * 100)} % of receivables are over 90 days "
                    "past due (threshold 20 %)",
                }
            )
        projected = cash + due_30 - payables_due_30
        if projected < 0:
            alerts.append(
                {
                    "code": "cash_negative_30_days",
                    "message": f"cash may go negative within 30 days: {self.money(cash)} cash + "
                    f"{self.money(due_30)} receivables due - {self.money(payables_due_30)} "
                    f"payables due = {self.money(projected)}",
                }
            )
        return alerts


def _page(name: str, keys: list[str], total: int, after_cursor: int) -> dict[str, Any]:
    """A paged list's `<name>_total` (all of them on as_of) and `<name>_next`: the cursor to ask
    for the next page with (the last key listed), null when none follow it."""
    return {
        f"{name}_total": int(total),
        f"{name}_next": keys[-1] if keys and after_cursor > len(keys) else None,
    }


def _paged(
    name: str, entries: list[dict[str, Any]], key: str, limit: int | None, after: str | None
) -> dict[str, Any]:
    """A page of `entries` (in `key` order) as `_page` describes it, cut in Python."""
    following = [entry for entry in entries if after is None or entry[key] > after]
    listed = following if limit is None else following[:limit]
    return {
        name: listed,
        **_page(name, [entry[key] for entry in listed], len(entries), len(following)),
    }


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _ratio(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):f}"


def _days(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'), rounding=ROUND_HALF_EVEN):f}"


# --- output formats ---------------------------------------------------------------------------


def rows_of(kind: str, data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The report's main table: (header, rows), for --format table and csv."""
    if kind == "kpi":
        return ["kpi", "value"], [[name, value] for name, value in data["kpis"].items()]
    if kind == "ar-aging":
        header = ["customer_id", *BUCKETS, "total", "unapplied"]
        rows = [
            [c["customer_id"], *c["buckets"].values(), c["total"], c["unapplied"]]
            for c in data["customers"]
        ]
        rows.append(["TOTAL", *data["buckets"].values(), data["total"], data["unapplied"]])
        return header, rows
    if kind == "deferred-revenue":
        header = ["contract_id", "customer_id", "billed", "recognized", "deferred", "unbilled"]
        rows = [[c[name] for name in header] for c in data["contracts"]]
        rows.append(
            ["TOTAL", "", data["billed"], data["recognized"], data["deferred"], data["unbilled"]]
        )
        return header, rows
    if kind == "trial-balance":
        header = ["account", "debit", "credit", "balance"]
        rows = [[a[name] for name in header] for a in data["accounts"]]
        rows.append(["TOTAL", data["total_debit"], data["total_credit"], ""])
        return header, rows
    header = ["movement", "amount"]
    return header, [[name, data[name]] for name in mrr_movement_names]


def to_csv(kind: str, data: dict[str, Any]) -> str:
    header, rows = rows_of(kind, data)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def to_table(kind: str, data: dict[str, Any]) -> str:
    header, rows = rows_of(kind, data)
    cells = [header, *[[("" if v is None else str(v)) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        f"{kind} {data['tenant']} as of {data.get('as_of', '')} ({data.get('currency') or '-'})"
    ]
    for index, row in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(width) if column == 0 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


# --- reports that reflect every committed event ------------------------------------------------


async def catch_up_tenant(
    store: PostgresEventStore, conn: AsyncConnection[TupleRow], tenant: str
) -> None:
    """Apply to the report projections what is committed for `tenant` and not yet applied (the
    live worker may be behind); the writer skips what it applies meanwhile, so this is safe."""
    from projections.registry import select
    from projections.replay import catch_up

    await catch_up(store, conn, select(list(REPORT_PROJECTIONS)), tenant=tenant)


async def fresh_report(
    store: PostgresEventStore,
    conn: AsyncConnection[TupleRow],
    kind: str,
    tenant: str,
    as_of: date,
    *,
    limit: int | None = None,
    after: str | None = None,
    invoices_after: str | None = None,
) -> dict[str, Any]:
    """A report that reflects every event committed before it was asked for."""
    parse_kind(kind)
    check_page(kind, limit, after, invoices_after)
    await catch_up_tenant(store, conn, tenant)
    return await report(
        conn, kind, tenant, as_of, limit=limit, after=after, invoices_after=invoices_after
    )
