"""A fresh database per benchmark run, dropped afterwards (psycopg only, so every bench can use it
whatever extras it needs otherwise)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


@contextmanager
def fresh_database(
    server_url: str,
    *,
    template: str | None = None,
    settings: Sequence[tuple[str, str]] = (),
    prefix: str = "bench",
) -> Iterator[str]:
    """A new database on `server_url`'s server, dropped after. With `template`, a copy of that one
    (file by file: seconds, where loading it again takes minutes); `settings`: (name, value) pairs
    set on it (ALTER DATABASE ... SET), so every connection to it has them."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = make_conninfo(server_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        for setting, value in settings:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(name), sql.Identifier(setting), sql.Literal(value)
                )
            )
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
