"""Log lines are JSON objects, one per line, even when the message holds quotes and newlines."""

from __future__ import annotations

import logging

import orjson

from ledger.logs import JsonFormatter


def test_log_lines_are_json_objects() -> None:
    record = logging.LogRecord(
        "ledger.relay", logging.WARNING, __file__, 1, 'said "hi"\nbye %d', (2,), None
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "ledger.relay"
    assert entry["message"] == 'said "hi"\nbye 2'
    assert entry["time"].endswith("Z")
