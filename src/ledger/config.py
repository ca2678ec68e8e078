"""Settings read from the environment.

Every server comes from configuration in production (`LEDGER_DATABASE_URL`,
`LEDGER_KAFKA_BOOTSTRAP`, `LEDGER_REDIS_URL`); when a URL is absent the embedded default starts its
own server (see `ledger.embedded`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(".ledger"))
    jwt_secret: str | None = None
    kafka_partitions: int = 6
    # The idempotent producer needs InitProducerId, which Apache Kafka has and the embedded tansu
    # broker does not; correctness never depends on it (consumers skip applied positions).
    kafka_idempotent: bool = True
    # Topic names and the projection workers' consumer group (tests run several side by side).
    events_topic: str = "ledger.events"
    worker_group: str = "ledger-projections"
    # Where other services publish events to append; rejected ones go to `<ingest_topic>.dlq`.
    ingest_topic: str = "ledger.ingest"
    # Where `ledger relay`, `ledger ingest` and `ledger worker` serve /metrics (none when unset).
    metrics_port: int | None = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=_env("LEDGER_DATABASE_URL"),
            kafka_bootstrap=_env("LEDGER_KAFKA_BOOTSTRAP"),
            redis_url=_env("LEDGER_REDIS_URL"),
            data_dir=Path(_env("LEDGER_DATA_DIR") or ".ledger"),
            jwt_secret=_env("LEDGER_JWT_SECRET"),
            kafka_partitions=int(_env("LEDGER_KAFKA_PARTITIONS") or 6),
            kafka_idempotent=(_env("LEDGER_KAFKA_IDEMPOTENT") or "true").lower() != "false",
            events_topic=_env("LEDGER_EVENTS_TOPIC") or "ledger.events",
            worker_group=_env("LEDGER_WORKER_GROUP") or "ledger-projections",
            ingest_topic=_env("LEDGER_INGEST_TOPIC") or "ledger.ingest",
            metrics_port=int(_env("LEDGER_METRICS_PORT") or 0) or None,
        )
