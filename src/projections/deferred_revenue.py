"""Deferred revenue: per contract, its recognition schedule, what was billed into deferred revenue,
and so billed / recognised / deferred / unbilled as of any date, and a waterfall.

Tables:
- `dr_contracts`: each contract with its lines; each line's schedule is a list of segments (see
  `projections.accounting.recognised_in_segment`), one per signature, amendment or cancellation;
- `dr_billing`: per contract and day, what invoices booked to deferred revenue, net of credit notes
  and voids (increments);
- `dr_invoices`: what is still booked of each contract invoice, so credit notes reverse it as the
  general ledger does (the same `split_credit`).

Recognition follows DESIGN section 6: by day, A x days elapsed / days in term, in full precision,
rounded per line to the minor unit when reported, so a schedule sums exactly to its amount. An
amendment is prospective: each line's new segment starts at the effective date with what was
recognised before it as its base and spreads (new amount - base) evenly over the remaining days; a
line the amendment drops stops there. A cancellation stops every line at its date; what was billed
and not recognised stays deferred until credited. A point-in-time line is recognised whole on its
`obligation.satisfied` date. The waterfall is what the schedules known at the as-of date still
recognise, month by month (ratable lines; an unsatisfied point-in-time line has no date yet).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import BigInteger, Column, Date, Numeric, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from projections import accounting as acc
from projections.core import ProjectedEvent
from projections.general_ledger import source_of
from projections.tables import Key, Rows, tenant_table

dr_contracts = tenant_table(
    "dr_contracts",
    Column("contract_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("cancelled_on", Date),
    Column("lines", JSONB, nullable=False),
    Column("position", BigInteger, nullable=False),
)
dr_billing = tenant_table(
    "dr_billing",
    Column("contract_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("amount", Numeric, nullable=False),
)
dr_invoices = tenant_table(
    "dr_invoices",
    Column("invoice_id", Text, primary_key=True),
    Column("contract_id", Text),
    Column("revenue", Numeric, nullable=False),
    Column("deferred", Numeric, nullable=False),
    Column("tax", Numeric, nullable=False),
)


def _segment(start: date, end: date, base: Any, amount: Any, satisfied_on: Any) -> dict[str, Any]:
    return {
        "seg_start": start.isoformat(),
        "seg_end": end.isoformat(),
        "base": str(base),
        "amount": str(amount),
        "satisfied_on": satisfied_on,
    }


def _new_line(line: dict[str, Any], segments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "recognition": line["recognition"],
        "recurring": bool(line.get("recurring", False)),
        "amount": str(line["amount"]),
        "description": line.get("description", ""),
        "segments": segments,
    }


def segments_with_recognition(line: dict[str, Any]) -> list[dict[str, Any]]:
    """A line's segments, each with its recognition: its own when an amendment changed the
    line's recognition (so the past keeps how it was recognised), else the line's."""
    return [{"recognition": line["recognition"], **segment} for segment in line["segments"]]


class DeferredRevenue:
    name = "deferred_revenue"
    tables = (dr_contracts, dr_billing, dr_invoices)

    def needs(self, event: ProjectedEvent) -> Iterable[tuple[Table, Key]]:
        contract_id = event.data.get("contract_id")
        if isinstance(contract_id, str):
            yield dr_contracts, (contract_id,)
        invoice_id = event.data.get("invoice_id")
        if isinstance(invoice_id, str):
            yield dr_invoices, (invoice_id,)

    def apply(self, rows: Rows, event: ProjectedEvent) -> None:
        data = event.data
        match source_of(event.type):
            case "contract.signed":
                start, end = acc.day(data["start_date"]), acc.day(data["end_date"])
                rows.put(
                    dr_contracts,
                    {
                        "contract_id": data["contract_id"],
                        "customer_id": data["customer_id"],
                        "start_date": start,
                        "end_date": end,
                        "cancelled_on": None,
                        "lines": {
                            line["line_id"]: _new_line(
                                line, [_segment(start, end, 0, line["amount"], None)]
                            )
                            for line in data["lines"]
                        },
                        "position": event.position,
                    },
                )
            case "contract.amended" | "contract.cancelled":
                contract = rows.get(dr_contracts, data["contract_id"])
                if contract is None:  # unreachable for an event the store accepted
                    return
                effective = acc.day(data["effective_date"])
                new_lines = {line["line_id"]: line for line in data.get("lines", [])}
                contract["lines"] = _amend(contract, effective, new_lines)
                if source_of(event.type) == "contract.cancelled":
                    contract["cancelled_on"] = effective
                rows.put(dr_contracts, contract)
            case "obligation.satisfied":
                contract = rows.get(dr_contracts, data["contract_id"])
                if contract is None:
                    return
                line = contract["lines"][data["line_id"]]
                line["segments"] = [
                    {**segment, "satisfied_on": data["date"]} for segment in line["segments"]
                ]
                rows.put(dr_contracts, contract)
            case "invoice.issued":
                booking = acc.invoice_booking(data)
                rows.put(
                    dr_invoices,
                    {
                        "invoice_id": data["invoice_id"],
                        "contract_id": data.get("contract_id"),
                        **booking,
                    },
                )
                if booking["deferred"]:
                    rows.add(
                        dr_billing,
                        {
                            "contract_id": data["contract_id"],
                            "day": acc.day(data["issue_date"]),
                            "amount": booking["deferred"],
                        },
                    )
            case "invoice.voided" | "credit_note.issued":
                invoice = rows.get(dr_invoices, data["invoice_id"])
                if invoice is None:
                    return
                remaining = {name: invoice[name] for name in ("revenue", "deferred", "tax")}
                if source_of(event.type) == "invoice.voided":
                    parts = remaining
                else:
                    parts = acc.split_credit(
                        remaining, acc.money(data["amount"]), acc.digits_of(data["currency"])
                    )
                rows.put(
                    dr_invoices,
                    {**invoice, **{name: remaining[name] - parts[name] for name in remaining}},
                )
                if parts["deferred"]:
                    rows.add(
                        dr_billing,
                        {
                            "contract_id": invoice["contract_id"],
                            "day": acc.day(data["date"]),
                            "amount": -parts["deferred"],
                        },
                    )
            case _:
                return


def _amend(
    contract: dict[str, Any], effective: date, new_lines: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The contract's lines after a change effective on `effective` (no new lines: cancelled)."""
    end = contract["end_date"]
    lines: dict[str, Any] = {}
    before = effective - acc.one_day
    for line_id, line in contract["lines"].items():
        segments = line["segments"]
        recognised = acc.recognised_by_line(segments_with_recognition(line), before)
        satisfied = segments[-1]["satisfied_on"] if segments else None
        # Segments before the change keep the recognition they had, whatever the new version says.
        kept = [
            {"recognition": line["recognition"], **segment}
            for segment in segments
            if segment["seg_start"] != effective.isoformat()
        ]
        new = new_lines.get(line_id)
        if new is None:  # dropped (or cancelled): recognition stops here
            lines[line_id] = {
                **line,
                "segments": [*kept, _segment(effective, end, recognised, 0, satisfied)],
            }
            continue
        amount = acc.money(new["amount"])
        lines[line_id] = _new_line(
            new,
            [
                *kept,
                {
                    **_segment(effective, end, recognised, amount - recognised, satisfied),
                    "recognition": new["recognition"],
                },
            ],
        )
    for line_id, new in new_lines.items():
        if line_id not in lines:
            lines[line_id] = _new_line(new, [_segment(effective, end, 0, new["amount"], None)])
    return lines
