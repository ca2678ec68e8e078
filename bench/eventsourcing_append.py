"""The reference for `ledger append FILE`: save the same JSON lines with the `eventsourcing` library
(9.5, PostgreSQL persistence), as a process of its own, timed from interpreter start to exit.

    python bench/eventsourcing_append.py --database-url URL FILE [--db-functions] [--application]

Each line is one event of one aggregate (the entity the ledger's stream is: customer, invoice or
payment, per tenant), stored with the CloudEvent JSON as its state, 1,000 per `insert_events` call:
the library's fastest batched path. `--application` goes through `Application.save` instead (an
aggregate per event, the library's JSON transcoder), which is what an application would write.

Without `--db-functions` the recorder takes `LOCK TABLE ... IN EXCLUSIVE MODE` per insert, which
keeps notification ids in commit order: the same guarantee the ledger gives its positions. With it,
the library calls its `es_insert_events` function, which skips that lock (faster, weaker order).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.events import originator_id

# Events per insert_events call (one transaction each), as the ledger CLI's chunk of lines.
batch_events = 1000


def _connection_parts(database_url: str) -> dict[str, str]:
    parts = conninfo_to_dict(database_url)
    return {
        "dbname": str(parts.get("dbname", "postgres")),
        "host": str(parts.get("host", "127.0.0.1")),
        "port": str(parts.get("port", "5432")),
        "user": str(parts.get("user", "postgres")),
        "password": str(parts.get("password", "")),
    }


def recorder(
    database_url: str, *, pool_size: int = 1, db_functions: bool = False
) -> PostgresApplicationRecorder:
    """The library's PostgreSQL application recorder, its table created."""
    datastore = PostgresDatastore(
        **_connection_parts(database_url),
        pool_size=pool_size,
        max_overflow=0,
        enable_db_functions=db_functions,
    )
    application_recorder = PostgresApplicationRecorder(datastore)
    application_recorder.create_table()
    return application_recorder


def stored(cloud_event: dict[str, Any], versions: dict[uuid.UUID, int]) -> StoredEvent:
    """One stored event whose state is the CloudEvent's JSON, versioned within its aggregate."""
    originator = originator_id(cloud_event)
    versions[originator] = versions.get(originator, 0) + 1
    return StoredEvent(
        originator_id=originator,
        originator_version=versions[originator],
        topic=cloud_event["type"],
        state=orjson.dumps(cloud_event),
    )


class CloudEventAggregate(Aggregate):
    """A generic aggregate with one event type that carries the CloudEvent as its state."""

    @staticmethod
    def create_id(cloud_event: dict[str, Any]) -> uuid.UUID:
        return originator_id(cloud_event)

    @event("Recorded")
    def __init__(self, cloud_event: dict[str, Any]) -> None:
        self.cloud_event = cloud_event


def application(
    database_url: str, *, pool_size: int = 1, db_functions: bool = False
) -> Application:
    parts = _connection_parts(database_url)
    return Application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts["dbname"],
            "POSTGRES_HOST": parts["host"],
            "POSTGRES_PORT": parts["port"],
            "POSTGRES_USER": parts["user"],
            "POSTGRES_PASSWORD": parts["password"],
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_MAX_OVERFLOW": "0",
            "POSTGRES_ENABLE_DB_FUNCTIONS": "y" if db_functions else "n",
            "CREATE_TABLE": "y",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--db-functions", action="store_true")
    parser.add_argument("--application", action="store_true")
    parser.add_argument("file", type=Path)
    args = parser.parse_args()
    with args.file.open("rb") as handle:
        lines = [line for line in handle if line.strip()]
    if args.application:
        app = application(args.database_url, db_functions=args.db_functions)
        for start in range(0, len(lines), batch_events):
            chunk = lines[start : start + batch_events]
            app.save(*(CloudEventAggregate(orjson.loads(line)) for line in chunk))
        app.close()
        return
    target = recorder(args.database_url, db_functions=args.db_functions)
    versions: dict[uuid.UUID, int] = {}
    for start in range(0, len(lines), batch_events):
        chunk = lines[start : start + batch_events]
        target.insert_events([stored(orjson.loads(line), versions) for line in chunk])
    target.datastore.close()


if __name__ == "__main__":
    main()
