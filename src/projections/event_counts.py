"""Per-tenant event counts by type: the smallest real read model, and the runners' proving ground.

State: {"events": total, "by_type": {"ledger.invoice.issued.v1": n, ...}}.
"""

from __future__ import annotations

from projections.core import ProjectedEvent, State


class EventCounts:
    name = "event_counts"

    def initial(self) -> State:
        return {"events": 0, "by_type": {}}

    def apply(self, state: State, event: ProjectedEvent) -> State:
        by_type = dict(state["by_type"])
        by_type[event.type] = by_type.get(event.type, 0) + 1
        return {"events": state["events"] + 1, "by_type": by_type}
