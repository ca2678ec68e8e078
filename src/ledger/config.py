"""Settings read from the environment.

Every server comes from configuration in production (`LEDGER_DATABASE_URL`,
`LEDGER_KAFKA_BOOTSTRAP`, `LEDGER_REDIS_URL`); when a URL is absent the embedded default starts its
own server (see `ledger.embedded`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:  # cryptography takes a good part of a second to import: only when a key is set
    from ledger.signed_note import Signer

# Apache Kafka's own fetch.max.wait.ms, for a configured cluster.
kafka_fetch_max_wait_ms_default = 500

# Codecs a producer of the ledger may compress its batches with (aiokafka's; `cramjam` provides
# snappy, lz4 and zstd). The consumers read all of them, whatever they are configured with: another
# service's producer, or a topic's `compression.type`, chooses for the messages they read.
kafka_compressions = ("gzip", "snappy", "lz4", "zstd")
# The relay's and the dead-letter producer's codec unless LEDGER_KAFKA_COMPRESSION says otherwise:
# JSON events compress ~9x in the relay's batches for ~1 us of CPU an event (bench/RESULTS.md).
kafka_compression_default = "zstd"

# How often the projection worker sweeps the store for what Kafka has not delivered (seconds).
projection_sweep_s_default = 30

# A group member heartbeats this many times per session timeout (Kafka asks for at least 3).
heartbeats_per_session = 6


def group_timeouts(session_timeout_ms: int | None) -> dict[str, int]:
    """aiokafka consumer arguments for a session timeout (none: the client's defaults)."""
    if session_timeout_ms is None:
        return {}
    return {
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(1, session_timeout_ms // heartbeats_per_session),
    }


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@overload
def _positive_int(name: str, default: int) -> int: ...
@overload
def _positive_int(name: str, default: None = None) -> int | None: ...
def _positive_int(name: str, default: int | None = None) -> int | None:
    value = _env(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) == 0:
        raise ValueError(f"{name}: {value!r} is not a positive whole number")
    return int(value)


def _signer(name: str) -> Signer | None:
    value = _env(name)
    if value is None:
        return None
    from ledger.signed_note import NoteError, Signer

    try:
        return Signer.parse(value)
    except NoteError as error:
        raise ValueError(f"{name}: {error}") from None


def _compression(name: str, default: str | None) -> str | None:
    value = _env(name)
    if value is None:
        return default
    codec = value.lower()
    if codec == "none":
        return None
    if codec not in kafka_compressions:
        raise ValueError(f"{name}: {value!r} is not one of none, {', '.join(kafka_compressions)}")
    return codec


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
    # The codec the ledger's producers compress batches with (the relay's to the events topic, the
    # dead letters'); None: uncompressed.
    kafka_compression: str | None = kafka_compression_default
    # How long a consumer's fetch may wait for data (the worker's and `ledger ingest`'s); None: the
    # broker's default. Apache Kafka answers a waiting fetch as soon as data arrives, so the wait
    # only bounds idle polling (`kafka_fetch_max_wait_ms_default`, Kafka's own default); the
    # embedded tansu broker holds a fetch for about half its wait even when data arrives
    # meanwhile, so it gets a short one (`ledger.embedded.tansu_fetch_max_wait_ms`).
    kafka_fetch_max_wait_ms: int | None = None
    # How long a consumer group member may go without a heartbeat before it is dropped (the worker's
    # and `ledger ingest`'s); None: the client's default (faust 60 s, aiokafka 10 s). tansu holds a
    # JoinGroup for about half of it, so the embedded broker gets a short one
    # (`ledger.embedded.tansu_session_timeout_ms`). Heartbeats go every sixth of it.
    kafka_session_timeout_ms: int | None = None
    # Topic names and the projection workers' consumer group (tests run several side by side).
    events_topic: str = "ledger.events"
    worker_group: str = "ledger-projections"
    # Where other services publish events to append; rejected ones go to `<ingest_topic>.dlq`.
    ingest_topic: str = "ledger.ingest"
    # Where `ledger relay`, `ledger ingest` and `ledger worker` serve /metrics (none when unset).
    metrics_port: int | None = None
    # How often the worker compares its read models with the store and applies what Kafka has not
    # delivered within one such interval (`projections.sweep`).
    projection_sweep_s: int = projection_sweep_s_default
    # The key that signs the audit tree's checkpoints (`ledger audit keygen`); None: unsigned.
    audit_signer: Signer | None = None

    @property
    def fetch_max_wait_ms(self) -> int:
        """The consumers' fetch wait: the configured one or Kafka's default."""
        return self.kafka_fetch_max_wait_ms or kafka_fetch_max_wait_ms_default

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from the environment; ValueError naming the variable when one is malformed."""
        return cls(
            database_url=_env("LEDGER_DATABASE_URL"),
            kafka_bootstrap=_env("LEDGER_KAFKA_BOOTSTRAP"),
            redis_url=_env("LEDGER_REDIS_URL"),
            data_dir=Path(_env("LEDGER_DATA_DIR") or ".ledger"),
            jwt_secret=_env("LEDGER_JWT_SECRET"),
            kafka_partitions=_positive_int("LEDGER_KAFKA_PARTITIONS", 6),
            kafka_idempotent=(_env("LEDGER_KAFKA_IDEMPOTENT") or "true").lower() != "false",
            kafka_compression=_compression("LEDGER_KAFKA_COMPRESSION", kafka_compression_default),
            kafka_fetch_max_wait_ms=_positive_int("LEDGER_KAFKA_FETCH_MAX_WAIT_MS"),
            kafka_session_timeout_ms=_positive_int("LEDGER_KAFKA_SESSION_TIMEOUT_MS"),
            events_topic=_env("LEDGER_EVENTS_TOPIC") or "ledger.events",
            worker_group=_env("LEDGER_WORKER_GROUP") or "ledger-projections",
            ingest_topic=_env("LEDGER_INGEST_TOPIC") or "ledger.ingest",
            metrics_port=int(_env("LEDGER_METRICS_PORT") or 0) or None,
            projection_sweep_s=_positive_int(
                "LEDGER_PROJECTION_SWEEP_S", projection_sweep_s_default
            ),
            audit_signer=_signer("LEDGER_AUDIT_SIGNING_KEY"),
        )
