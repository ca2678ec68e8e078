"""The projectors every runner feeds (live worker, replay, catch-up, test runner)."""

from __future__ import annotations

from projections.core import Projector
from projections.event_counts import EventCounts


def all_projectors() -> list[Projector]:
    return [EventCounts()]


def select(names: list[str] | None) -> list[Projector]:
    projectors = all_projectors()
    if not names:
        return projectors
    known = {projector.name: projector for projector in projectors}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown projection(s) {unknown}; known: {sorted(known)}")
    return [known[name] for name in names]
