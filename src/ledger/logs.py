"""Structured logs: one JSON object per line on stderr (time, level, logger, message, exception)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # These log every step at INFO (pgserver each initdb and pg_ctl line, alembic each plugin and
    # migration, aiokafka each group rebalance, websockets each server start); ours are the lines
    # worth reading, and theirs still show from WARNING up.
    for chatty in ("pgserver", "alembic", "aiokafka", "websockets.server"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
