"""Fixtures for the ledger tests: a session database, fresh databases on demand, and the `store`
fixture that runs every contract test over both backends (in memory and PostgreSQL).

`database_url` comes from the top-level `tests/conftest.py` (LEDGER_DATABASE_URL or embedded).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ledger.store import EventStore
from ledger.store.memory import MemoryEventStore
from ledger.store.postgres import PostgresEventStore


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[EventStore]:
    """One backend per parameter. The PostgreSQL database is shared by the session: tests use
    their own tenants and count positions from the head they found (events are never deleted)."""
    opened: EventStore
    if request.param == "memory":
        opened = MemoryEventStore()
    else:
        opened = await PostgresEventStore.open(database_url)
    yield opened
    await opened.close()
