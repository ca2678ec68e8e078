"""The `ledger` command line, run as a real process against PostgreSQL: appends JSON lines,
reports every rejection by line with its code and field, lists events, migrates, and fails with a
one-line message (never a traceback) on bad input or an unreachable database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.ledger.events import customer, invoice, new_tenant, payment

src_dir = Path(__file__).resolve().parents[2] / "src"


def ledger(
    database_url: str, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    environment = dict(os.environ)
    environment["LEDGER_DATABASE_URL"] = database_url
    environment["PYTHONPATH"] = os.pathsep.join([str(src_dir), environment.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        input=stdin,
        capture_output=True,
        env=environment,
        timeout=120,
        check=False,
    )


def lines(*events: Any) -> bytes:
    return (
        b"\n".join(event if isinstance(event, bytes) else orjson.dumps(event) for event in events)
        + b"\n"
    )


def events_of(database_url: str, tenant: str, *extra: str) -> list[dict[str, Any]]:
    result = ledger(database_url, "events", "--tenant", tenant, *extra)
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def test_append_reports_appended_duplicates_and_rejected_lines(
    database_url: str, tmp_path: Path
) -> None:
    tenant = new_tenant()
    good = [customer(tenant), invoice(tenant, "INV-1"), payment(tenant, amount="40.00")]
    bad_total = invoice(tenant, "INV-2")
    bad_total["data"]["total"] = "1.00"
    file = tmp_path / "events.jsonl"
    file.write_bytes(lines(good[0], good[1], b"{not json", bad_total, b"", good[2]))

    result = ledger(database_url, "append", str(file))
    assert result.returncode == 1, result.stderr
    answer = orjson.loads(result.stdout)
    assert [entry["id"] for entry in answer["appended"]] == [event["id"] for event in good]
    assert [entry["index"] for entry in answer["appended"]] == [0, 1, 5]
    assert answer["duplicates"] == []
    assert [(e["index"], e["id"], e["code"], e["field"]) for e in answer["rejected"]] == [
        (2, None, "malformed_json", ""),
        (3, bad_total["id"], "total_mismatch", "data.total"),
    ]
    assert b"Traceback" not in result.stderr

    stored = events_of(database_url, tenant)
    assert [event["id"] for event in stored] == [event["id"] for event in good]
    assert stored[2]["ledger"]["allocations"] == [{"invoice_id": "INV-1", "amount": "40.00"}]

    again = ledger(database_url, "append", "-", stdin=lines(*good))
    assert again.returncode == 0, again.stderr
    answer = orjson.loads(again.stdout)
    assert answer["appended"] == [] and answer["rejected"] == []
    assert [entry["position"] for entry in answer["duplicates"]] == [
        event["position"] for event in stored
    ]


def test_atomic_append_appends_nothing_when_a_line_is_rejected(database_url: str) -> None:
    tenant = new_tenant()
    result = ledger(
        database_url,
        "append",
        "--atomic",
        "-",
        stdin=lines(customer(tenant), invoice(tenant, customer_id="NOBODY")),
    )
    assert result.returncode == 1
    answer = orjson.loads(result.stdout)
    assert answer["appended"] == []
    assert [(e["index"], e["code"]) for e in answer["rejected"]] == [(1, "unknown_customer")]
    assert events_of(database_url, tenant) == []


def test_events_pages_by_position_and_limit(database_url: str) -> None:
    tenant = new_tenant()
    batch = [customer(tenant, f"C{i}") for i in range(5)]
    assert ledger(database_url, "append", "-", stdin=lines(*batch)).returncode == 0
    everything = events_of(database_url, tenant)
    assert [event["id"] for event in everything] == [event["id"] for event in batch]
    third = everything[2]["position"]
    page = events_of(database_url, tenant, "--from-position", str(third), "--limit", "2")
    assert [event["position"] for event in page] == [third, everything[3]["position"]]


def test_migrate_is_idempotent(database_url: str) -> None:
    first = ledger(database_url, "migrate")
    assert first.returncode == 0, first.stderr
    second = ledger(database_url, "migrate")
    assert orjson.loads(second.stdout) == {"applied": []}


def test_usage_errors_and_unreachable_database_are_one_line(
    database_url: str, tmp_path: Path
) -> None:
    missing = ledger(database_url, "append", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert missing.stderr.decode().startswith("ledger: append: no such file")

    bad_tenant = ledger(database_url, "events", "--tenant", "no spaces allowed")
    assert bad_tenant.returncode == 2
    assert b"--tenant" in bad_tenant.stderr
    for option, value in (("--from-position", "0"), ("--from-position", str(2**63))):
        refused = ledger(database_url, "events", "--tenant", "acme", option, value)
        assert refused.returncode == 2 and option.encode() in refused.stderr, refused.stderr
    refused = ledger(database_url, "events", "--tenant", "acme", "--limit", "-5")
    assert refused.returncode == 2 and b"--limit" in refused.stderr

    down = ledger(
        "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2", "append", "-", stdin=b""
    )
    assert down.returncode == 3
    assert b"Traceback" not in down.stderr
    assert b"cannot reach the event store" in down.stderr


def test_a_malformed_setting_is_named_in_one_line(database_url: str) -> None:
    for name, value in [
        ("LEDGER_KAFKA_FETCH_MAX_WAIT_MS", "fast"),
        ("LEDGER_KAFKA_FETCH_MAX_WAIT_MS", "0"),
        ("LEDGER_KAFKA_PARTITIONS", "-3"),
        ("LEDGER_PROJECTION_SWEEP_S", "0.5"),
    ]:
        os.environ[name] = value
        try:
            result = ledger(database_url, "events", "--tenant", "acme")
        finally:
            del os.environ[name]
        assert result.returncode == 2, (name, value)
        assert result.stderr.decode() == (
            f"ledger: configuration: {name}: {value!r} is not a positive whole number\n"
        )
    os.environ["LEDGER_KAFKA_COMPRESSION"] = "brotli"
    try:
        result = ledger(database_url, "events", "--tenant", "acme")
    finally:
        del os.environ["LEDGER_KAFKA_COMPRESSION"]
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "ledger: configuration: LEDGER_KAFKA_COMPRESSION: 'brotli' is not one of"
        " none, gzip, snappy, lz4, zstd\n"
    )


def test_commands_run_with_their_startup_objects_frozen_and_a_larger_young_generation(
    database_url: str,
) -> None:
    """`ledger.runtime.settle_memory`: what a command loaded is never scanned again by the
    collector, whose young generation is collected after `gc_young_threshold` allocations."""
    environment = dict(os.environ)
    environment["LEDGER_DATABASE_URL"] = database_url
    environment["PYTHONPATH"] = os.pathsep.join([str(src_dir), environment.get("PYTHONPATH", "")])
    probe = (
        "import gc, sys\n"
        "from ledger.cli import main\n"
        "from ledger.runtime import gc_young_threshold\n"
        "assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] != gc_young_threshold\n"
        "code = main(['migrate'])\n"
        "print(code, gc.get_freeze_count(), gc.get_threshold()[0] == gc_young_threshold)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    code, frozen, threshold_set = result.stdout.split()[-3:]
    assert code == b"0" and int(frozen) > 10_000 and threshold_set == b"True"
