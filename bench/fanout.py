"""Gateway fan-out benchmark: one gateway process, 10,000 websocket clients, every client gets every
update; p50/p99 delivery, resident memory per connection; a stalled client alongside.

    python3 dev.py bench fanout [--clients N] [--updates N] [--rates R,R] [--redis-url URL]

Both servers run as their own process and are fed the same KPI states through Redis:
- ledger: `ledger gateway` (JWT checked, per-tenant Redis subscription, session state machine,
  direct writes to clients that keep up, coalescing for those that do not);
- reference: the least a Redis -> websocket pipe can do, in this file (`--reference-server`): no
  auth, no sessions, one pub/sub subscription, `websockets.broadcast` of the raw message to every
  connection. The ratio says what the gateway's logic costs over the bare pipe.

The clients are raw asyncio protocols in this process (a handshake, a masked subscribe frame, a
minimal frame parser that answers pings): a full websockets client per connection would make the
client side, not the server, the bottleneck on two cores. Delivery time = when the frame's bytes
reached the client's `data_received` - when the state was handed to Redis; so it includes Redis,
the server and the client's own reading (the same for both servers). States are published at
each of `--rates` per second; each has the size of a real KPI state (about 1.2 KB).

Scenarios: ledger with N clients; ledger with N clients and one client that subscribes and then
never reads (its TCP receive window closes, so the gateway's writes to it back up); reference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from ledger.auth import issue_token  # noqa: E402
from ledger.embedded import free_loopback_port  # noqa: E402
from projections import live  # noqa: E402
from projections.reports import kpi_names  # noqa: E402

secret = "bench-fanout-secret-of-at-least-32-bytes!"
tenant = "bench"
connect_concurrency = (
    50  # handshakes in flight: a SYN beyond the listen backlog (100) waits seconds
)
connect_timeout_s = 60.0
server_start_timeout_s = 30.0
drain_wait_s = 3.0  # after the last state, how long late frames may still arrive
kpis = dict.fromkeys(kpi_names, "1234567.89")


class RawClient(asyncio.Protocol):
    """A websocket client reduced to what the benchmark needs: arrival times by seq."""

    def __init__(self, path: str, stall: bool = False) -> None:
        self.path = path
        self.stall = stall
        self.handshake = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.upgraded = False
        self.arrivals: dict[int, float] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.stall:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def send_text(self, payload: bytes) -> None:
        assert self.transport is not None and len(payload) < 126
        self.transport.write(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self.upgraded = True
            if not self.handshake.done():
                self.handshake.set_result(status.startswith(b"HTTP/1.1 101"))
        self._frames(now)

    def _frames(self, now: float) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                break
            payload, buffer = buffer[start : start + length], buffer[start + length :]
            if opcode == 1 and payload.startswith(b'{"seq":'):
                self.arrivals.setdefault(int(payload[7 : payload.index(b",")]), now)
            elif opcode == 9 and self.transport is not None:  # ping: answer pong, masked
                self.transport.write(bytes([0x8A, 0x80 | length]) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                self.closed = True
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def connect_clients(port: int, path: str, count: int) -> list[RawClient]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(connect_concurrency)
    subscribe = b'{"type":"subscribe","channel":"kpi:update","tenant":"' + tenant.encode() + b'"}'

    async def one() -> RawClient:
        async with gate:
            _, client = await loop.create_connection(lambda: RawClient(path), "127.0.0.1", port)
            if not await asyncio.wait_for(client.handshake, connect_timeout_s):
                raise RuntimeError("handshake refused")
            client.send_text(subscribe)
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def stalled_client(port: int, path: str) -> RawClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: RawClient(path, stall=True), "127.0.0.1", port)
    await asyncio.wait_for(client.handshake, connect_timeout_s)
    client.send_text(b'{"type":"subscribe","channel":"kpi:update"}')
    await asyncio.sleep(0.2)
    assert client.transport is not None
    client.transport.pause_reading()  # never reads again
    return client


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds the process has used (load-independent, unlike wall time;
    on loopback the system part includes the receiving side's TCP work)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def start_server(kind: str, port: int, redis_url: str) -> subprocess.Popen[bytes]:
    environment = dict(os.environ, LEDGER_JWT_SECRET=secret, LEDGER_REDIS_URL=redis_url)
    environment.pop("LEDGER_DATABASE_URL", None)  # states come from Redis only
    if kind == "ledger":
        command = [sys.executable, "-m", "ledger.cli", "--log-level", "WARNING", "gateway"]
        command += ["--port", str(port)]
    else:
        command = [sys.executable, __file__, "--reference-server", "--port", str(port)]
        command += ["--redis-url", redis_url]
    child = subprocess.Popen(command, env=environment)
    deadline = time.monotonic() + server_start_timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return child
        except OSError:
            time.sleep(0.1)
    child.kill()
    raise RuntimeError(f"the {kind} server did not start")


def stop_server(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


async def run_scenario(
    kind: str, clients_count: int, updates: int, rate: float, redis_url: str, stall: bool
) -> dict[str, Any]:
    import redis.asyncio

    redis_client = redis.asyncio.Redis.from_url(redis_url)
    states = live.KpiStates(redis_client)
    await redis_client.delete(live.state_key(tenant))
    position = 1
    await states.publish(state_body(position))  # the snapshot new clients get
    port = free_loopback_port()
    server = start_server(kind, port, redis_url)
    try:
        path = f"/v1/stream?token={issue_token(secret, tenant, 3600)}"
        rss_before = rss_kib(server.pid)
        connect_started = time.perf_counter()
        clients = await connect_clients(port, path, clients_count)
        connect_s = time.perf_counter() - connect_started
        stalled = await stalled_client(port, path) if stall else None
        await asyncio.sleep(2.0)  # snapshots delivered, server settled
        rss_connected = rss_kib(server.pid)
        sent: dict[int, float] = {}
        cpu_before = cpu_s(server.pid)
        started = time.perf_counter()
        for number in range(updates):
            await asyncio.sleep(max(0.0, started + number / rate - time.perf_counter()))
            position += 1
            at = time.perf_counter()
            _published, message = await states.publish(state_body(position))
            sent[int(message[7 : message.index(b",")])] = at
        await asyncio.sleep(drain_wait_s)
        cpu_after = cpu_s(server.pid)
        cpu_used_s = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
        rss_after = rss_kib(server.pid)
        return summarise(
            kind + (" + stalled client" if stall else ""),
            clients,
            sent,
            connect_s,
            (rss_before, rss_connected, rss_after),
            stalled,
            cpu_used_s,
        )
    finally:
        stop_server(server)
        await redis_client.aclose()


def state_body(position: int) -> dict[str, Any]:
    return {
        "type": "kpi:update",
        "channel": "kpi:update",
        "tenant": tenant,
        "position": position,
        "as_of": "2026-11-23",
        "currency": "USD",
        "kpis": kpis,
        "alerts": [],
    }


def summarise(
    name: str,
    clients: list[RawClient],
    sent: dict[int, float],
    connect_s: float,
    rss: tuple[int, int, int],
    stalled: RawClient | None,
    cpu_used_s: tuple[float, float],
) -> dict[str, Any]:
    delivered = max(1, len(clients) * len(sent))
    delays_ms: list[float] = []
    missing = 0
    for client in clients:
        for seq, at in sent.items():
            arrived = client.arrivals.get(seq)
            if arrived is None:
                missing += 1
            else:
                delays_ms.append((arrived - at) * 1000)
    delays_ms.sort()
    per_update_p99 = []
    for seq, at in sent.items():
        wave = sorted((c.arrivals[seq] - at) * 1000 for c in clients if seq in c.arrivals)
        if wave:
            per_update_p99.append(wave[int(len(wave) * 0.99) - 1 if len(wave) > 1 else 0])
    return {
        "scenario": name,
        "clients": len(clients),
        "updates": len(sent),
        "frames expected": len(clients) * len(sent),
        "frames missing": missing,
        "p50 ms": statistics.median(delays_ms) if delays_ms else None,
        "p99 ms": delays_ms[int(len(delays_ms) * 0.99)] if delays_ms else None,
        "max ms": delays_ms[-1] if delays_ms else None,
        "worst update's p99 ms": max(per_update_p99) if per_update_p99 else None,
        "server CPU us per frame, user": cpu_used_s[0] * 1e6 / delivered,
        "system": cpu_used_s[1] * 1e6 / delivered,
        "connect s": connect_s,
        "RSS before MiB": rss[0] / 1024,
        "RSS connected MiB": rss[1] / 1024,
        "RSS after MiB": rss[2] / 1024,
        "KiB per connection": (rss[1] - rss[0]) / max(1, len(clients)),
        "stalled client got": None if stalled is None else len(stalled.arrivals),
        "closed clients": sum(client.closed for client in clients),
    }


def table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            cells.append(f"{value:,.1f}" if isinstance(value, float) else f"{value}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def reference_server(port: int, redis_url: str) -> None:
    """The bare pipe: Redis pub/sub -> websockets.broadcast to every connection."""
    import redis.asyncio
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    connections: set[ServerConnection] = set()
    redis_client = redis.asyncio.Redis.from_url(redis_url)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(live.channel(tenant))

    async def handler(connection: ServerConnection) -> None:
        await connection.recv()  # the subscribe frame
        message = await redis_client.hget(live.state_key(tenant), "message")
        await connection.send(message, text=True)
        connections.add(connection)
        try:
            await connection.wait_closed()
        finally:
            connections.discard(connection)

    async def pipe() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                broadcast(connections, message["data"], text=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=4096):
        task = asyncio.create_task(pipe())
        await stop.wait()
        task.cancel()


async def main(args: argparse.Namespace) -> None:
    redis_url = args.redis_url or os.environ.get("LEDGER_REDIS_URL") or "redis://127.0.0.1:6379/0"
    rows = []
    for rate in args.rates:
        for kind, stall in (("ledger", False), ("ledger", True), ("reference", False)):
            name = f"{kind}{' + stalled' if stall else ''}, {args.clients} clients, {rate}/s"
            print(f"fanout: {name}", file=sys.stderr)
            row = await run_scenario(kind, args.clients, args.updates, rate, redis_url, stall)
            rows.append({"states/s": rate, **row})
            print(table(rows[-1:]), file=sys.stderr)
    print(table(rows))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument(
        "--rates",
        type=lambda text: [float(rate) for rate in text.split(",")],
        default=[1.0, 2.0, 4.0],
        help="states published per second, one run per rate (default 1,2,4)",
    )
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--reference-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def run(coroutine: Any) -> None:
    """On uvloop when installed, as `ledger gateway` runs: the same loop for the reference server
    and for the clients (whose reading would otherwise weigh on every figure)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.reference_server:
        run(reference_server(arguments.port, arguments.redis_url))
    else:
        run(main(arguments))
