"""The reference for `ledger append FILE`: save the same JSON lines with the eventsourcing library
(9.5, PostgreSQL application recorder), in batches of 1,000 per transaction, its fastest path.

    python bench/eventsourcing_append.py --database-url URL FILE
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import orjson
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.conninfo import conninfo_to_dict

batch_events = 1000


def recorder(database_url: str, pool_size: int = 1) -> PostgresApplicationRecorder:
    parts = conninfo_to_dict(database_url)
    datastore = PostgresDatastore(
        dbname=str(parts.get("dbname", "postgres")),
        host=str(parts.get("host", "127.0.0.1")),
        port=str(parts.get("port", "5432")),
        user=str(parts.get("user", "postgres")),
        password=str(parts.get("password", "")),
        pool_size=pool_size,
        max_overflow=0,
        enable_db_functions=True,
    )
    application_recorder = PostgresApplicationRecorder(datastore)
    application_recorder.create_table()
    return application_recorder


def stored(line: bytes, versions: dict[str, int]) -> StoredEvent:
    event = orjson.loads(line)
    stream = f"{event['tenantid']}/{event['type']}/{event['id']}"
    versions[stream] = versions.get(stream, 0) + 1
    return StoredEvent(
        originator_id=uuid.uuid5(uuid.NAMESPACE_URL, stream),
        originator_version=versions[stream],
        topic=event["type"],
        state=orjson.dumps(event),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("file", type=Path)
    args = parser.parse_args()
    target = recorder(args.database_url)
    versions: dict[str, int] = {}
    batch: list[StoredEvent] = []
    with args.file.open("rb") as lines:
        for line in lines:
            if line.strip():
                batch.append(stored(line, versions))
            if len(batch) == batch_events:
                target.insert_events(batch)
                batch = []
    if batch:
        target.insert_events(batch)


if __name__ == "__main__":
    main()
