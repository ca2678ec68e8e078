"""MRR: each contract's monthly recurring revenue over time, so MRR per customer as of any date and
its movements per month (DESIGN section 7).

Tables:
- `mrr_contracts`: each contract's customer, term, whole months and current MRR segment;
- `mrr_segments`: [seg_start, seg_end) periods with a constant MRR, per contract.

A contract's MRR is the sum of its recurring ratable lines, each amount (its total over the term, from
the contract's current version) divided by the whole months of the term (at least 1); one-time and
point-in-time lines are not MRR. It counts from the start date (or an amendment's effective date) to
the end date (exclusive) or the cancellation date. A customer's MRR on a day is the sum over its
contracts, in full precision, rounded to the minor unit per customer: movements are computed from
those rounded figures, so ending = starting + new + reactivation + expansion - contraction - churn
holds to the cent. A month's starting MRR is MRR at the end of the previous month's last day, its
ending MRR at the end of its own last day.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Date, Index, Integer, Numeric, Table, Text

from projections import accounting as acc
from projections.core import ProjectedEvent
from projections.general_ledger import source_of
from projections.tables import Key, Rows, tenant_table

mrr_contracts = tenant_table(
    "mrr_contracts",
    Column("contract_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("months", Integer, nullable=False),
    Column("seg_start", Date, nullable=False),
    Column("mrr", Numeric, nullable=False),
)
mrr_segments = tenant_table(
    "mrr_segments",
    Column("contract_id", Text, primary_key=True),
    Column("seg_start", Date, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("seg_end", Date, nullable=False),
    Column("mrr", Numeric, nullable=False),
)
Index("mrr_segments_by_customer", mrr_segments.c.tenant_id, mrr_segments.c.customer_id)


def contract_mrr(lines: list[dict[str, Any]], months: int) -> Decimal:
    return sum(
        (
            acc.money(line["amount"]) / months
            for line in lines
            if line.get("recurring") and line["recognition"] == "ratable"
        ),
        acc.zero,
    )


class Mrr:
    name = "mrr"
    tables = (mrr_contracts, mrr_segments)

    def needs(self, event: ProjectedEvent) -> Iterable[tuple[Table, Key]]:
        if event.type.endswith((".contract.amended.v1", ".contract.cancelled.v1")):
            yield mrr_contracts, (event.data["contract_id"],)

    def apply(self, rows: Rows, event: ProjectedEvent) -> None:
        data = event.data
        match source_of(event.type):
            case "contract.signed":
                start, end = acc.day(data["start_date"]), acc.day(data["end_date"])
                months = acc.whole_months(start, end)
                mrr = contract_mrr(data["lines"], months)
                contract = {
                    "contract_id": data["contract_id"],
                    "customer_id": data["customer_id"],
                    "start_date": start,
                    "end_date": end,
                    "months": months,
                    "seg_start": start,
                    "mrr": mrr,
                }
                rows.put(mrr_contracts, contract)
                self._segment(rows, contract, end)
            case "contract.amended" | "contract.cancelled":
                found = rows.get(mrr_contracts, data["contract_id"])
                if found is None:  # unreachable for an event the store accepted
                    return
                contract = found
                effective = acc.day(data["effective_date"])
                self._segment(rows, contract, effective)  # the current period ends here
                if source_of(event.type) == "contract.cancelled":
                    contract["mrr"] = acc.zero
                else:
                    contract["mrr"] = contract_mrr(data["lines"], contract["months"])
                contract["seg_start"] = effective
                rows.put(mrr_contracts, contract)
                if contract["mrr"]:
                    self._segment(rows, contract, contract["end_date"])
            case _:
                return

    @staticmethod
    def _segment(rows: Rows, contract: dict[str, Any], seg_end: Any) -> None:
        if seg_end <= contract["seg_start"]:
            rows.delete(mrr_segments, contract["contract_id"], contract["seg_start"])
            return
        rows.put(
            mrr_segments,
            {
                "contract_id": contract["contract_id"],
                "seg_start": contract["seg_start"],
                "customer_id": contract["customer_id"],
                "seg_end": seg_end,
                "mrr": contract["mrr"],
            },
        )
