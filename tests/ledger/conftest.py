"""Fixtures for the ledger tests: a session database, fresh databases on demand, and the `store`
fixture that runs every contract test over both backends (in memory and PostgreSQL).

`database_url` is defined here only while the top-level `tests/conftest.py` does not define it; once
it does (embedded pgserver or LEDGER_DATABASE_URL), these tests use that one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.store import EventStore
from ledger.store.memory import MemoryEventStore
from ledger.store.postgres import PostgresEventStore

default_server_url = "postgresql://postgres@127.0.0.1:5432/postgres"
# A test database that a crashed run left behind is dropped by name, so they are easy to spot.
test_database_prefix = "ledger_test_"


def _server_url() -> str:
    return os.environ.get("LEDGER_DATABASE_URL") or default_server_url


def _with_database(conninfo: str, database: str) -> str:
    return make_conninfo(conninfo, dbname=database)


def _maintenance_url(conninfo: str) -> str:
    return _with_database(conninfo, "postgres")


def _create_database(server_url: str) -> str:
    name = f"{test_database_prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_maintenance_url(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(server_url, name)


def _drop_database(conninfo: str) -> None:
    name = conninfo_to_dict(conninfo)["dbname"]
    with psycopg.connect(_maintenance_url(conninfo), autocommit=True) as conn:
        # FORCE: a store a failing test did not close must not keep the database alive.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


def _top_level_defines_database_url() -> bool:
    top_level = Path(__file__).resolve().parent.parent / "conftest.py"
    return top_level.exists() and "def database_url" in top_level.read_text(encoding="utf-8")


if not _top_level_defines_database_url():

    @pytest.fixture(scope="session")
    def database_url() -> Iterator[str]:
        """A fresh database for this test session, dropped at the end."""
        conninfo = _create_database(_server_url())
        yield conninfo
        _drop_database(conninfo)


@pytest.fixture
def new_database(database_url: str) -> Iterator[Callable[[], str]]:
    """Make more fresh (unmigrated) databases on the session database's server; dropped after."""
    created: list[str] = []

    def make() -> str:
        conninfo = _create_database(database_url)
        created.append(conninfo)
        return conninfo

    yield make
    for conninfo in created:
        _drop_database(conninfo)


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
