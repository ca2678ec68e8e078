"""Prometheus metrics of every role, in one registry per process.

The HTTP API serves them at `/metrics` (with `ledger up`, that covers the API, the relay and the
ingest consumer, which share its process); `ledger relay`, `ledger ingest` and `ledger worker` serve
them on LEDGER_METRICS_PORT when it is set.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

# Latency buckets from 1 ms to 10 s: appends are milliseconds, end-to-end projection tens of ms.
# Close together around the design's targets (1 and 5 ms for an append, 50 and 100 ms end to end)
# so that a quantile read from them (interpolated within its bucket, as `histogram_quantile`
# does) can tell 60 ms from 90: with a bucket from 100 to 250 ms, a p99 of 110 and one of 240 ms
# looked the same.
_latency_buckets_s = (
    0.001, 0.0015, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

events_appended = Counter("ledger_events_appended", "Events appended to the store")
events_duplicate = Counter("ledger_events_duplicate", "Appends answered as duplicates")
rejections = Counter("ledger_rejections", "Events rejected, by code", ["code"])
append_paths = Counter(
    "ledger_append_transactions",
    "Append transactions, by path: one round trip on the writer's knowledge, two (lock and load,"
    " then write), or a guess not written (followed by two)",
    ["path"],
)
open_invoice_loads = Counter(
    "ledger_append_open_invoice_loads",
    "Loads of a longer prefix of a customer's open invoices, for a payment allocated past the"
    " one an append transaction first read",
)
append_seconds = Histogram(
    "ledger_append_seconds", "Time to validate and append one request", buckets=_latency_buckets_s
)
events_relayed = Counter("ledger_events_relayed", "Events published to Kafka by the relay")
relay_publish_seconds = Histogram(
    "ledger_relay_publish_seconds",
    "Time to publish one batch until acked",
    buckets=_latency_buckets_s,
)
relay_lag_events = Gauge("ledger_relay_lag_events", "Committed events not yet published")
events_projected = Counter(
    "ledger_events_projected", "Events applied, by projection", ["projection"]
)
projection_apply_seconds = Histogram(
    "ledger_projection_apply_seconds", "Time to apply one batch", buckets=_latency_buckets_s
)
projection_latency_seconds = Histogram(
    "ledger_projection_latency_seconds",
    "From the event's commit to its read model's commit",
    buckets=_latency_buckets_s,
)
consumer_lag_messages = Gauge(
    "ledger_consumer_lag_messages", "Messages behind the partition's end", ["role", "partition"]
)
events_skipped = Counter(
    "ledger_events_skipped", "Events the projection worker could not apply and skipped"
)
projection_lag_seconds = Gauge(
    "ledger_projection_lag_seconds",
    "How long the oldest committed event the read models lack has been committed (0: none),"
    " as of the worker's last store sweep",
)
projection_lagging_tenants = Gauge(
    "ledger_projection_lagging_tenants",
    "Tenants whose read models lack committed events, as of the worker's last store sweep",
)
events_from_store = Counter(
    "ledger_projection_events_from_store",
    "Events the worker's sweep applied from the store because Kafka had not delivered them",
)
kpi_parts_reused = Counter(
    "ledger_kpi_parts_reused",
    "Parts of a KPI state taken from the previous state instead of read again, by part",
    ["part"],
)
ingest_messages = Counter("ledger_ingest_messages", "Ingest messages, by outcome", ["outcome"])


def serve(port: int | None) -> None:
    if port:
        start_http_server(port, addr="127.0.0.1")
        logger.info("metrics on http://127.0.0.1:%d/metrics", port)
