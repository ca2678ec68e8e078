"""The projectors every runner feeds (live worker, replay, catch-up, test runner)."""

from __future__ import annotations

from typing import Any

from projections.ar_aging import ArAging
from projections.audit_chain import AuditChain
from projections.deferred_revenue import DeferredRevenue
from projections.event_counts import EventCounts
from projections.general_ledger import GeneralLedger
from projections.mrr import Mrr


def all_projectors() -> list[Any]:
    return [EventCounts(), GeneralLedger(), ArAging(), DeferredRevenue(), Mrr(), AuditChain()]


def select(names: list[str] | None) -> list[Any]:
    projectors = all_projectors()
    if not names:
        return projectors
    known = {projector.name: projector for projector in projectors}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown projection(s) {unknown}; known: {sorted(known)}")
    return [known[name] for name in names]
