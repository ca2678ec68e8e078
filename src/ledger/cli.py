"""The `ledger` command line.

    ledger migrate                     apply the event store's migrations
    ledger append FILE|-  [--atomic]   append JSON lines; print what was appended, duplicated, rejected
    ledger events --tenant T [--from-position N] [--limit N]   stored events as JSON lines
    ledger api [--host H] [--port P] [--gateway-url URL]   serve the HTTP API and dashboard
    ledger relay                       publish stored events to Kafka (LEDGER_KAFKA_BOOTSTRAP)
    ledger ingest                      append what other services publish to ledger.ingest
    ledger worker                      project ledger.events into the read models (faust)
    ledger token --tenant T [--ttl-s N]   a bearer token signed with LEDGER_JWT_SECRET
    ledger replay [--projection NAME] [--processes N]
                                       rebuild read models from the store, swap them in atomically
    ledger catch-up [--projection NAME]   bring read models to the store's head and exit
    ledger gateway [--host H] [--port P]   serve the websocket gateway (kpi:update, /v1/stream)
    ledger up [--api-port P] [--gateway-port P] [--data-dir D] [--demo]
                                       run everything (API, relay, ingest, worker, gateway,
                                       dashboard) on embedded defaults; --demo streams demo events
    ledger report KIND --tenant T --as-of YYYY-MM-DD [--format json|table|csv] [--limit N]
                [--after ID]
                                       kpi, ar-aging, deferred-revenue, trial-balance, mrr-movements
    ledger audit verify --tenant T     check the tenant's audit hash chain against the store
    ledger audit tree-head --tenant T [--size N]   the chain's RFC 9162 Merkle tree head
    ledger audit prove --tenant T --position P [--size N]   an inclusion proof
    ledger audit consistency --tenant T --first M [--second N]   a consistency proof
    ledger audit check FILE|- [--trusted-root HEX] [--verifier-key K]   verify a proof offline
    ledger audit keygen --name NAME    an Ed25519 key for signed tree heads (checkpoints)

Exit codes: 0 success; 1 something was rejected; 2 bad usage or input that cannot be read;
3 a server (the database) cannot be reached; `audit verify` exits 2 when the chain is broken
(its JSON names where), `audit check` when the proof does not hold. Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from ledger import logs, metrics
from ledger.config import Settings
from ledger.errors import LedgerError, StoreUnavailableError
from ledger.service import AppendReport, LedgerService, parse_all
from ledger.store import append_batch_events_max, position_max

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow

    from ledger.signed_note import Signer
    from ledger.store.postgres import PostgresEventStore

logger = logging.getLogger("ledger")

# Lines are parsed and appended in chunks; parsing one chunk overlaps the database work of the
# previous one. 1,000 lines keep memory small and the append lock short.
append_chunk_lines = 1000
exit_rejected = 1
exit_usage = 2
exit_unavailable = 3
exit_chain_broken = 2
exit_refs_differ = 2
# A child (the projection worker) gets this long to exit on SIGTERM before it is killed.
child_stop_timeout_s = 20
# `ledger up` restarts a child that exits: after 1 s, doubling to 30 s while each one fails within
# a minute of its start (a crash loop does not spin), back to 1 s after a minute up.
child_restart_delay_initial_s = 1.0
child_restart_delay_max_s = 30.0
child_healthy_after_s = 60.0
child_poll_s = 0.5
# The tokens `ledger up` prints: a working day of watching a dashboard.
up_token_ttl_s = 12 * 3600
# A secret made for the embedded default: 256 bits, as HS256 wants at least.
jwt_secret_bytes = 32
jwt_secret_file = "jwt-secret"


def _print_json(value: Any, stream: IO[bytes] | None = None) -> None:
    out = stream or sys.stdout.buffer
    out.write(orjson.dumps(value) + b"\n")
    out.flush()


def _fail(message: str, code: int = exit_usage) -> int:
    sys.stderr.write(f"ledger: {message}\n")
    return code


def _read_lines(source: str) -> Iterator[tuple[int, bytes]]:
    handle = sys.stdin.buffer if source == "-" else Path(source).open("rb")  # noqa: SIM115
    try:
        for number, line in enumerate(handle):
            stripped = line.strip()
            if stripped:
                yield number, stripped
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _chunks(lines: Iterator[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def append_lines(
    service: LedgerService, lines: Iterator[tuple[int, bytes]], *, atomic: bool
) -> AppendReport:
    """Append JSON lines; `index` in the answer is the 0-based line number in the input."""
    if atomic:
        numbered = list(lines)
        parsed, rejected = parse_all([text for _, text in numbered])
        report = await service.append_parsed(parsed, rejected, atomic=True)
        return _renumber(report, [number for number, _ in numbered])
    report = AppendReport()
    in_flight: asyncio.Task[AppendReport] | None = None
    in_flight_numbers: list[int] = []
    for chunk in _chunks(lines, min(append_chunk_lines, append_batch_events_max)):
        parsed, rejected = parse_all([text for _, text in chunk])
        if in_flight is not None:
            report.extend(_renumber(await in_flight, in_flight_numbers))
        in_flight = asyncio.create_task(service.append_parsed(parsed, rejected, atomic=False))
        in_flight_numbers = [number for number, _ in chunk]
    if in_flight is not None:
        report.extend(_renumber(await in_flight, in_flight_numbers))
    return report


def _renumber(report: AppendReport, numbers: list[int]) -> AppendReport:
    for entries in (report.appended, report.duplicates, report.rejected):
        for entry in entries:
            entry["index"] = numbers[entry["index"]]
    return report


async def _append_command(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.runtime import open_service

    if args.file != "-" and not Path(args.file).is_file():
        return _fail(f"append: no such file: {args.file}")
    async with open_service(settings) as service:
        report = await append_lines(service, _read_lines(args.file), atomic=args.atomic)
    _print_json(report.as_json())
    return exit_rejected if report.rejected else 0


async def _events_command(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.contract import tenant_pattern
    from ledger.runtime import open_service

    if not tenant_pattern.match(args.tenant):
        return _fail(f"events: --tenant {args.tenant!r} is not a valid tenant id")
    if not 1 <= args.from_position <= position_max:
        return _fail(f"events: --from-position must be from 1 to {position_max}")
    if args.limit is not None and args.limit < 0:
        return _fail("events: --limit must be 0 or more")
    async with open_service(settings) as service:
        position, remaining = args.from_position, args.limit
        while remaining is None or remaining > 0:
            page_size = 1000 if remaining is None else min(remaining, 1000)
            events = await service.store.read(args.tenant, position, page_size)
            for event in events:
                sys.stdout.buffer.write(orjson.dumps(event.as_json()) + b"\n")
            if not events:  # a short page may end at its size in bytes
                break
            position = events[-1].position + 1
            if remaining is not None:
                remaining -= len(events)
    sys.stdout.buffer.flush()
    return 0


async def _migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.runtime import database_url
    from ledger.store.postgres import migrate

    with database_url(settings) as url:
        applied = await migrate(url)
    _print_json({"applied": applied})
    return 0


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    return stop


async def _start_api(
    service: LedgerService,
    host: str,
    port: int,
    jwt_secret: str | None = None,
    gateway_url: str | None = None,
    audit_signer: Signer | None = None,
) -> Any:
    from aiohttp import web

    from ledger.api import make_app

    if jwt_secret is None:
        logger.warning("the HTTP API is open to anyone: set LEDGER_JWT_SECRET to require tokens")
    runner = web.AppRunner(
        make_app(service, jwt_secret, gateway_url, audit_signer), access_log=None
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    logger.info("HTTP API listening on http://%s:%d", host, port)
    return runner


async def _api_command(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.runtime import open_service

    async with open_service(settings, wait=True) as service:
        runner = await _start_api(
            service,
            args.host,
            args.port,
            settings.jwt_secret,
            args.gateway_url,
            settings.audit_signer,
        )
        try:
            await _stop_on_signals().wait()
        finally:
            await runner.cleanup()
    return 0


async def _run_relay(settings: Settings, store: Any, stop: asyncio.Event) -> None:
    from ledger.relay import KafkaPublisher, Relay

    assert settings.kafka_bootstrap
    publisher = KafkaPublisher(
        settings.kafka_bootstrap,
        idempotent=settings.kafka_idempotent,
        compression=settings.kafka_compression,
    )
    try:
        await Relay(
            store, publisher, topic=settings.events_topic, partitions=settings.kafka_partitions
        ).run(stop)
    finally:
        await publisher.close()


async def _relay_command(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.runtime import open_store

    if not settings.kafka_bootstrap:
        return _fail("relay: set LEDGER_KAFKA_BOOTSTRAP (or run everything with `ledger up`)")
    metrics.serve(settings.metrics_port)
    async with open_store(settings, wait=True) as store:
        stop = _stop_on_signals()
        await _run_relay(settings, store, stop)
    return 0


def _ingest(settings: Settings, service: LedgerService) -> Any:
    from ledger.ingest import Ingest

    assert settings.kafka_bootstrap
    topic = settings.ingest_topic
    return Ingest(
        service,
        settings.kafka_bootstrap,
        topic=topic,
        dead_letters=f"{topic}.dlq",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        compression=settings.kafka_compression,
    )


async def _ingest_command(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.runtime import open_service

    if not settings.kafka_bootstrap:
        return _fail("ingest: set LEDGER_KAFKA_BOOTSTRAP (or run everything with `ledger up`)")
    metrics.serve(settings.metrics_port)
    async with open_service(settings, wait=True) as service:
        await _ingest(settings, service).run(_stop_on_signals())
    return 0


# Progress of replay and catch-up: a terminal bar is redrawn at most this often, a log line (when
# stderr is not a terminal) is written at most this often.
progress_redraw_s = 0.2
progress_log_interval_s = 10.0
progress_bar_width = 30


def _progress_printer(command: str, stream: IO[str] | None = None) -> Any:
    """A one-line progress bar (position/head, events/s, ETA) when stderr is a terminal, a plain
    log line every `progress_log_interval_s` otherwise."""
    out = stream or sys.stderr
    terminal = out.isatty()
    interval_s = progress_redraw_s if terminal else progress_log_interval_s
    shown_at_s = -interval_s

    def show(position: int, head: int, elapsed_s: float) -> None:
        nonlocal shown_at_s
        if elapsed_s - shown_at_s < interval_s and position < head:
            return
        shown_at_s = elapsed_s
        rate = position / elapsed_s if elapsed_s > 0 else 0.0
        eta_s = (head - position) / rate if rate > 0 else 0.0
        if not terminal:
            logger.info(
                "%s: %d/%d events, %.0f events/s, ETA %.0f s", command, position, head, rate, eta_s
            )
            return
        share = min(position / head, 1.0) if head else 1.0
        bar = "#" * int(share * progress_bar_width)
        out.write(
            f"\r[{bar:<{progress_bar_width}}] {position:,}/{head:,} events"
            f"  {rate:,.0f} events/s  ETA {eta_s:,.0f} s "
        )
        out.flush()

    return show


async def _audit_chain_guard(
    store: PostgresEventStore, conn: AsyncConnection[TupleRow], rebuild_broken: bool
) -> int | None:
    """Before the audit chain is rebuilt from the store as it is: verify every tenant's chain.
    A broken one is the evidence of a change behind the ledger's back, which a rebuild would
    erase: refuse (exit 2, the broken chains on stdout) unless `rebuild_broken`."""
    from projections.audit_verify import broken_chains

    sys.stderr.write("replay: verifying every audit chain before rebuilding it\n")
    broken = await broken_chains(store, conn)
    if not broken:
        return None
    named = ", ".join(
        f"{answer['tenant']} at position {answer['broken_at_position']} ({answer['code']})"
        for answer in broken
    )
    if rebuild_broken:
        logger.warning("rebuilding broken audit chains as told, erasing their evidence: %s", named)
        return None
    _print_json({"command": "replay", "refused": True, "broken_audit_chains": broken})
    return _fail(
        f"replay: the audit chain is broken for {named}; rebuilding it would erase that evidence."
        " Look with `ledger audit verify --tenant T`; rebuild anyway with"
        " --rebuild-broken-audit-chain",
        exit_chain_broken,
    )


async def _projections_command(settings: Settings, args: argparse.Namespace) -> int:
    from psycopg import AsyncConnection

    from ledger.runtime import open_store
    from ledger.store.postgres import configure_connection
    from projections import registry
    from projections.replay import catch_up, replay

    try:
        projectors = registry.select(args.projection)
    except ValueError as error:
        return _fail(f"{args.command}: {error}")
    processes: int | None = getattr(args, "processes", None)
    if processes is not None and processes < 1:
        return _fail(f"{args.command}: --processes must be 1 or more, not {processes}")
    async with open_store(settings) as store:
        conn = await AsyncConnection.connect(store.conninfo, autocommit=True)
        try:
            await configure_connection(conn)
            if args.command == "replay" and any(p.name == "audit_chain" for p in projectors):
                refused = await _audit_chain_guard(store, conn, args.rebuild_broken_audit_chain)
                if refused is not None:
                    return refused
            started = time.monotonic()
            show = _progress_printer(args.command)
            if args.command == "replay":
                position = await replay(store, conn, projectors, show, processes=processes)
            else:
                position = await catch_up(store, conn, projectors, show)
        finally:
            await conn.close()
    elapsed_s = time.monotonic() - started
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    _print_json(
        {
            "command": args.command,
            "projections": [projector.name for projector in projectors],
            "position": position,
            "seconds": round(elapsed_s, 3),
        }
    )
    return 0


async def _report_command(settings: Settings, args: argparse.Namespace) -> int:
    from psycopg import AsyncConnection

    from ledger.contract import tenant_pattern
    from ledger.runtime import open_store
    from ledger.store.postgres import configure_connection
    from projections import reports

    try:
        kind = reports.parse_kind(args.kind)
        as_of = reports.parse_as_of(args.as_of)
    except reports.ReportError as error:
        return _fail(f"report: {error}")
    if not tenant_pattern.match(args.tenant):
        return _fail(f"report: --tenant {args.tenant!r} is not a valid tenant id")
    try:
        reports.check_page(kind, args.limit, args.after, args.invoices_after)
    except reports.ReportError as error:
        return _fail(f"report: --{error.field.replace('_', '-')}: {error.reason}")
    async with open_store(settings) as store:
        conn = await AsyncConnection.connect(store.conninfo, autocommit=True)
        try:
            await configure_connection(conn)
            data = await reports.fresh_report(
                store,
                conn,
                kind,
                args.tenant,
                as_of,
                limit=args.limit,
                after=args.after,
                invoices_after=args.invoices_after,
            )
        finally:
            await conn.close()
    if args.format == "json":
        _print_json(data)
    elif args.format == "csv":
        sys.stdout.write(reports.to_csv(kind, data))
    else:
        sys.stdout.write(reports.to_table(kind, data))
    sys.stdout.flush()
    return 0


async def _audit_command(settings: Settings, args: argparse.Namespace) -> int:
    """`ledger audit verify|tree-head|prove|consistency|check`."""
    from psycopg import AsyncConnection

    from ledger.contract import tenant_pattern
    from ledger.runtime import open_store
    from ledger.store.postgres import configure_connection
    from projections import audit_proofs
    from projections.audit_verify import verify

    command = f"audit {args.audit_command}"
    if args.audit_command == "check":
        return _audit_check(args)
    if args.audit_command == "keygen":
        return _audit_keygen(args)
    if not tenant_pattern.fullmatch(args.tenant):
        return _fail(f"{command}: --tenant {args.tenant!r} is not a valid tenant id")
    for option in ("size", "position", "first", "second"):
        value = getattr(args, option, None)
        if value is not None and value < 0:
            return _fail(f"{command}: --{option} must be a whole number, not {value}")
    async with open_store(settings) as store:
        conn = await AsyncConnection.connect(store.conninfo, autocommit=True)
        try:
            await configure_connection(conn)
            if args.audit_command == "verify":
                result = await verify(store, conn, args.tenant)
            elif args.audit_command == "tree-head":
                result = await audit_proofs.tree_head(
                    store, conn, args.tenant, args.size, settings.audit_signer
                )
            elif args.audit_command == "prove":
                result = await audit_proofs.inclusion(
                    store, conn, args.tenant, args.position, args.size
                )
            else:
                result = await audit_proofs.consistency(
                    store, conn, args.tenant, args.first, args.second
                )
        except audit_proofs.ProofError as error:
            return _fail(f"{command}: --{error.field}: {error.reason}")
        finally:
            await conn.close()
    _print_json(result)
    return 0 if result.get("ok", True) else exit_chain_broken


def _audit_check(args: argparse.Namespace) -> int:
    """`ledger audit check FILE [--trusted-root HEX]`: a proof verified offline; exit 2 when it
    does not hold."""
    from projections import audit_proofs

    try:
        text = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        answer = orjson.loads(text)
    except (OSError, orjson.JSONDecodeError) as error:
        return _fail(f"audit check: {args.file}: {error}")
    if not isinstance(answer, dict):
        return _fail(f"audit check: {args.file}: not a JSON object")
    trusted = args.trusted_root
    if trusted is not None and not re.fullmatch(r"[0-9a-f]{64}", trusted):
        return _fail("audit check: --trusted-root must be 64 lowercase hex digits (a SHA-256)")
    from ledger.signed_note import NoteError, Verifier

    verifier = None
    if args.verifier_key is not None:
        try:
            verifier = Verifier.parse(args.verifier_key)
        except NoteError as error:
            return _fail(f"audit check: --verifier-key: {error}")
    result = audit_proofs.check(answer, trusted, verifier)
    _print_json(result)
    return 0 if result["ok"] else exit_chain_broken


def _audit_keygen(args: argparse.Namespace) -> int:
    """`ledger audit keygen --name NAME`: a new Ed25519 key for the tree heads' checkpoints."""
    from ledger.signed_note import NoteError, Signer

    try:
        signer = Signer.generate(args.name)
    except NoteError as error:
        return _fail(f"audit keygen: --name: {error}")
    _print_json({"signer_key": str(signer), "verifier_key": str(signer.verifier)})
    return 0


async def _refs_command(settings: Settings, args: argparse.Namespace) -> int:
    """`ledger refs verify|rebuild`: the append rules' reference state derived again from the
    events. It connects as the configured user, not the store's row-security role: a rebuild
    deletes rows, which the role that appends may not (nor may it bypass the tenant policy, which
    `ledger.tenants` opens here for the scope asked)."""
    from psycopg import AsyncConnection

    from ledger.contract import tenant_pattern
    from ledger.refs import RefsDerivationError, derive
    from ledger.runtime import open_store
    from ledger.store.postgres import configure_connection

    tenant: str | None = args.tenant
    if tenant is not None and not tenant_pattern.fullmatch(tenant):
        return _fail(f"refs {args.refs_command}: --tenant {tenant!r} is not a valid tenant id")
    rebuild = args.refs_command == "rebuild"
    async with open_store(settings) as store:  # migrated, and the database reachable
        conn = await AsyncConnection.connect(store.conninfo, autocommit=True)
        try:
            await configure_connection(conn, app_role_too=False)
            show = _progress_printer(f"refs {args.refs_command}")
            try:
                result = await derive(conn, tenant, rebuild=rebuild, progress=show)
            except RefsDerivationError as error:
                result = {
                    "tenant": tenant or "*",
                    "ok": False,
                    "error": {"position": error.position, "message": str(error)},
                    **({"rebuilt": False} if rebuild else {}),
                }
        finally:
            await conn.close()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    _print_json(result)
    if "error" in result:
        return exit_refs_differ
    # A rebuild that put the derived state in place leaves the store consistent: success.
    return 0 if result["ok"] or result.get("rebuilt") else exit_refs_differ


def _spawn_worker(settings: Settings) -> Any:
    """`ledger worker` as a child process: faust wants an event loop of its own."""
    environment = dict(os.environ)
    environment.update(
        LEDGER_DATABASE_URL=settings.database_url or "",
        LEDGER_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "",
        LEDGER_KAFKA_IDEMPOTENT="true" if settings.kafka_idempotent else "false",
        LEDGER_KAFKA_FETCH_MAX_WAIT_MS=str(settings.fetch_max_wait_ms),
        LEDGER_KAFKA_SESSION_TIMEOUT_MS=str(settings.kafka_session_timeout_ms or ""),
        LEDGER_REDIS_URL=settings.redis_url or "",
        LEDGER_EVENTS_TOPIC=settings.events_topic,
        LEDGER_WORKER_GROUP=settings.worker_group,
    )
    return subprocess.Popen([sys.executable, "-m", "ledger.cli", "worker"], env=environment)


class _Supervised:
    """A child process `ledger up` keeps running until it stops: one that exits on its own (a
    crash, the kernel's OOM killer, a kill -9) is logged and started again, so the read models
    and the KPIs do not silently stop moving while the API keeps accepting events."""

    def __init__(self, name: str, spawn: Callable[[], Any]) -> None:
        self.name = name
        self.spawn = spawn
        self.child = spawn()
        self.started = time.monotonic()
        self.restarts = 0

    async def run(self, stop: asyncio.Event) -> None:
        delay = child_restart_delay_initial_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), child_poll_s)
            code = self.child.poll()
            if stop.is_set() or code is None:
                continue
            if time.monotonic() - self.started >= child_healthy_after_s:
                delay = child_restart_delay_initial_s
            logger.error(
                "the %s (pid %d) exited with code %d; starting it again in %.1f s",
                self.name,
                self.child.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            delay = min(delay * 2, child_restart_delay_max_s)
            self.child, self.started = self.spawn(), time.monotonic()
            self.restarts += 1
            logger.warning("the %s started again (pid %d)", self.name, self.child.pid)

    def stop(self) -> None:
        _stop_child(self.child)


def _stop_child(child: Any) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=child_stop_timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _gateway_secret(settings: Settings) -> str:
    """The configured secret, or one made for this data folder and kept there (0600), so tokens
    printed by `ledger up` keep working across restarts."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.data_dir / jwt_secret_file
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(jwt_secret_bytes))
    return path.read_text().strip()


async def _gateway_command(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.server import start_gateway

    if not settings.jwt_secret:
        return _fail("gateway: set LEDGER_JWT_SECRET, the secret tokens are checked with")
    if not settings.redis_url:
        return _fail("gateway: set LEDGER_REDIS_URL (or run everything with `ledger up`)")
    running = await start_gateway(
        args.host, args.port, settings.redis_url, settings.jwt_secret, settings.database_url
    )
    logger.info("gateway listening on ws://%s:%d/v1/stream", args.host, running.port)
    try:
        await _stop_on_signals().wait()
    finally:
        await running.close()
    return 0


def _up_banner(args: argparse.Namespace, secret: str, tenants: list[str], **lines: str) -> str:
    from ledger.auth import issue_token

    api = f"http://{args.host}:{args.api_port}"
    text = ["ledger is up."]
    text += [f"  {name + ':':<11}{value}" for name, value in lines.items()]
    for tenant in tenants:
        token = issue_token(secret, tenant, up_token_ttl_s)
        label = "all tenants" if tenant == "*" else f"tenant {tenant}"
        text.append(f"  dashboard ({label}): {api}/?token={token}")
    text.append("Press Ctrl-C to stop.")
    return "\n".join(text) + "\n"


async def _up_command(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.server import start_gateway
    from ledger.runtime import database_url, kafka_cluster, open_store, redis_url, settle_memory

    settings = dataclasses.replace(settings, data_dir=Path(args.data_dir))
    secret = _gateway_secret(settings)
    with (
        redis_url(settings) as redis,
        kafka_cluster(settings) as settings,
        database_url(settings) as database,
    ):
        settings = dataclasses.replace(settings, redis_url=redis, database_url=database)
        bootstrap = settings.kafka_bootstrap
        async with open_store(settings, wait=True) as store:
            gateway = await start_gateway(args.host, args.gateway_port, redis, secret, database)
            gateway_url = f"ws://{args.host}:{gateway.port}/v1/stream"
            runner = await _start_api(
                LedgerService(store),
                args.host,
                args.api_port,
                settings.jwt_secret,
                gateway_url,
                settings.audit_signer,
            )
            stop = _stop_on_signals()
            relay = asyncio.create_task(_run_relay(settings, store, stop))
            ingest = asyncio.create_task(_ingest(settings, LedgerService(store)).run(stop))
            worker = _Supervised("projection worker", lambda: _spawn_worker(settings))
            supervising = asyncio.create_task(worker.run(stop))
            demo, tenants = _start_demo(LedgerService(store), stop) if args.demo else (None, ["*"])
            settle_memory()  # again, with every server started
            sys.stdout.write(
                _up_banner(
                    args,
                    secret,
                    tenants,
                    **{
                        "HTTP API": f"http://{args.host}:{args.api_port}/v1/events"
                        f"   (health: http://{args.host}:{args.api_port}/healthz)",
                        "gateway": gateway_url,
                        "Kafka": f"{bootstrap} (the relay publishes to ledger.events;"
                        " publish to ledger.ingest to append)",
                        "Redis": f"{redis} (KPI states and change notices)",
                        "worker": f"pid {worker.child.pid} (projections)",
                        "data": str(settings.data_dir.resolve()),
                    },
                )
            )
            sys.stdout.flush()
            try:
                await stop.wait()
            finally:
                stop.set()
                if demo is not None:
                    await demo
                await supervising
                worker.stop()
                await relay
                await ingest
                await runner.cleanup()
                await gateway.close()
    return 0


def _start_demo(service: LedgerService, stop: asyncio.Event) -> tuple[Any, list[str]]:
    from ledger import demo

    task = asyncio.create_task(demo.run_demo(service, stop), name="demo")
    return task, list(demo.demo_tenants)


async def _token_command(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.auth import issue_token

    secret = settings.jwt_secret
    kept = settings.data_dir / jwt_secret_file
    if not secret and kept.exists():
        secret = kept.read_text().strip()  # the one `ledger up` made for this data folder
    if not secret:
        return _fail(
            "token: set LEDGER_JWT_SECRET, the secret the API and gateway check tokens with"
            f" (or run `ledger up` once, which keeps one in {kept})"
        )
    if args.ttl_s <= 0:
        return _fail("token: --ttl-s must be a positive number of seconds")
    sys.stdout.write(issue_token(secret, args.tenant, args.ttl_s) + "\n")
    return 0


def _worker_command(settings: Settings) -> int:
    """Faust's worker owns its event loop and signals, so this runs outside asyncio.run."""
    from ledger.runtime import database_url, settle_memory
    from projections.registry import all_projectors
    from projections.worker import run_worker

    settle_memory()  # again, with faust and the projections loaded
    if not settings.kafka_bootstrap:
        return _fail("worker: set LEDGER_KAFKA_BOOTSTRAP (or run everything with `ledger up`)")
    with database_url(settings) as url:
        run_worker(settings, url, all_projectors())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply the event store's migrations")

    append = commands.add_parser("append", help="append events from a JSON lines file")
    append.add_argument("file", help="a JSON lines file, or - for standard input")
    append.add_argument(
        "--atomic", action="store_true", help="all or nothing: append no line if any is rejected"
    )

    events = commands.add_parser("events", help="list stored events as JSON lines")
    events.add_argument("--tenant", required=True)
    events.add_argument("--from-position", type=int, default=1)
    events.add_argument("--limit", type=int, default=None)

    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument(
        "--gateway-url",
        default=os.environ.get("LEDGER_GATEWAY_URL") or None,
        help="the websocket URL the dashboard connects to, e.g. wss://host/v1/stream"
        " (default LEDGER_GATEWAY_URL; without it the dashboard has no live figures)",
    )

    commands.add_parser("relay", help="publish stored events to Kafka (LEDGER_KAFKA_BOOTSTRAP)")
    commands.add_parser("ingest", help="append events published to Kafka's ledger.ingest")
    commands.add_parser("worker", help="run the projection worker (faust) on ledger.events")
    token = commands.add_parser("token", help="print a bearer token for a tenant (* for all)")
    token.add_argument("--tenant", required=True)
    token.add_argument("--ttl-s", type=int, default=3600, help="lifetime in seconds (default 3600)")
    for name, text in (
        ("replay", "rebuild read models from the store and swap them in atomically"),
        ("catch-up", "bring read models to the store's head, then exit"),
    ):
        runner = commands.add_parser(name, help=text)
        runner.add_argument(
            "--projection", action="append", help="only this projection (repeatable)"
        )
    commands.choices["replay"].add_argument(
        "--processes",
        type=int,
        help="fold in this many processes (default: one per core, within a limit, for large"
        " stores; 1: in this process)",
    )
    commands.choices["replay"].add_argument(
        "--rebuild-broken-audit-chain",
        action="store_true",
        help="rebuild audit chains that do not verify (erasing the evidence they hold)",
    )

    report = commands.add_parser("report", help="a report as of a date (reads the read models)")
    report.add_argument(
        "kind", help="kpi, ar-aging, deferred-revenue, trial-balance, mrr-movements"
    )
    report.add_argument("--tenant", required=True)
    report.add_argument("--as-of", required=True, help="YYYY-MM-DD (the end of that day)")
    report.add_argument("--format", choices=("json", "table", "csv"), default="json")
    report.add_argument(
        "--limit",
        type=int,
        default=None,
        help="list at most N of each list (ar-aging: customers and invoices; deferred-revenue:"
        " contracts; mrr-movements: customers); totals cover all",
    )
    report.add_argument(
        "--after",
        default=None,
        help="start the paged list after this id (ar-aging and mrr-movements: customer_id;"
        " deferred-revenue: contract_id), as the answer's customers_next or contracts_next gives",
    )
    report.add_argument(
        "--invoices-after",
        default=None,
        help="ar-aging: start the invoice list after this cursor, as the answer's invoices_next"
        " gives (the list is oldest due date first)",
    )

    audit = commands.add_parser("audit", help="the tamper-evident audit chain")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="recompute a tenant's chain from the store; exit 2 where it breaks"
    )
    verify.add_argument("--tenant", required=True)
    head = audit_commands.add_parser(
        "tree-head", help="the RFC 9162 Merkle tree head (size, root) of a tenant's chain"
    )
    head.add_argument("--tenant", required=True)
    head.add_argument("--size", type=int, help="of the first N events (default: all)")
    prove = audit_commands.add_parser(
        "prove", help="an inclusion proof of the event at a position in the tree"
    )
    prove.add_argument("--tenant", required=True)
    prove.add_argument("--position", type=int, required=True)
    prove.add_argument("--size", type=int, help="in the tree of the first N events (default: all)")
    consistent = audit_commands.add_parser(
        "consistency", help="a proof that the tree of N events extends the tree of M"
    )
    consistent.add_argument("--tenant", required=True)
    consistent.add_argument("--first", type=int, required=True, help="M, the older tree's size")
    consistent.add_argument("--second", type=int, help="N (default: all the events)")
    check = audit_commands.add_parser(
        "check", help="verify a proof (from prove or consistency) offline; exit 2 if it fails"
    )
    check.add_argument("file", help="the proof as JSON, or - for standard input")
    check.add_argument(
        "--trusted-root",
        help="a root kept from earlier that the proof must start from (inclusion: its root;"
        " consistency: its first root)",
    )
    check.add_argument(
        "--verifier-key", help="the key a tree head's checkpoint must be signed with"
    )
    keygen = audit_commands.add_parser(
        "keygen",
        help="a new Ed25519 key for signed tree heads: the signer key for"
        " LEDGER_AUDIT_SIGNING_KEY (secret) and the verifier key to hand out",
    )
    keygen.add_argument("--name", required=True, help="the key's name, e.g. ledger.example.com")

    refs = commands.add_parser(
        "refs", help="the append rules' reference state (ledger_refs), derived from the events"
    )
    refs_commands = refs.add_subparsers(dest="refs_command", required=True)
    for name, text in (
        ("verify", "derive it again and compare; exit 2 where it differs"),
        ("rebuild", "derive it again and put it in place (appends wait for the last part)"),
    ):
        refs_command = refs_commands.add_parser(name, help=text)
        refs_command.add_argument("--tenant", default=None, help="one tenant (default: all)")

    up = commands.add_parser("up", help="run the whole system on embedded defaults")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--api-port", type=int, default=8080)
    up.add_argument("--gateway-port", type=int, default=8765)
    up.add_argument("--data-dir", default=".ledger")
    up.add_argument("--demo", action="store_true", help="stream demo events for a few tenants")

    gateway = commands.add_parser("gateway", help="serve the websocket gateway (/v1/stream)")
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8765)
    return parser


_commands = {
    "migrate": _migrate_command,
    "append": _append_command,
    "events": _events_command,
    "api": _api_command,
    "relay": _relay_command,
    "ingest": _ingest_command,
    "replay": _projections_command,
    "token": _token_command,
    "catch-up": _projections_command,
    "report": _report_command,
    "audit": _audit_command,
    "refs": _refs_command,
    "up": _up_command,
    "gateway": _gateway_command,
}


def _loop_factory(command: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for `ledger gateway`, whose fan-out is a socket write per client, where libuv's loop
    is faster; asyncio's own loop everywhere else (and where uvloop is not installed)."""
    if command != "gateway":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = Settings.from_env()
    except ValueError as error:
        return _fail(f"configuration: {error}")
    from ledger import runtime  # the store and the contract's models: every command's

    runtime.settle_memory()
    if args.command == "worker":
        return _worker_command(settings)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.command)) as runner:
            return runner.run(_commands[args.command](settings, args))
    except StoreUnavailableError as error:
        return _fail(str(error), exit_unavailable)
    except LedgerError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        return _fail(f"{args.command}: {error}")


if __name__ == "__main__":
    raise SystemExit(main())
