"""The gateway server (`ledger gateway`): websockets in, Redis pub/sub out, decisions elsewhere.

Everything the protocol decides lives in `gateway.session`; this module moves bytes:

- `/v1/stream` only (`/healthz` answers ok); the bearer token comes in `Authorization: Bearer` or,
  for browsers, which cannot set headers on a websocket, in `?token=`. A missing, bad or expired
  token: the connection is accepted and closed at once with 4401, as DESIGN section 8 asks.
- One Redis pub/sub connection per process, subscribed to `ledger:kpi:<tenant>` for each tenant
  that has a client here (unsubscribed when its last client leaves). A new subscriber's snapshot is
  read from Redis after the subscription is confirmed, so no state can fall between the two; when
  Redis has no state yet (a fresh Redis, a tenant without events since), it is computed from the
  read models and published like any other (`projections.live`), so seq stays Redis's.
- Fan-out encodes each frame once and writes it, synchronously, to every client whose socket buffer
  is below `write_buffer_bytes_max` (no task switch and no encoding per client, which is what lets
  one process serve 10,000 clients). A client above it is slow: it gets a writer task that
  waits for its socket to drain, and meanwhile its session keeps only the newest state per
  subscription. A slow client therefore costs the others nothing and holds one state in memory.
- Redis lost: the listener retries with backoff; once back, it re-subscribes (redis-py does) and
  reloads every subscribed tenant's state, so a client misses nothing for longer than the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from gateway.session import Close, KpiState, Session, Subscribe, Unsubscribe
from ledger.auth import AuthError, tenant_of
from projections import live

logger = logging.getLogger(__name__)

stream_path = "/v1/stream"
# Client frames are small subscribe messages; anything bigger is not one of ours.
message_bytes_max = 4 * 1024
# A process holds this many clients at most (10,000 is the target; file descriptors and memory,
# ~50 KiB per client, bound the rest). Beyond it: close code 1013, try again later (elsewhere).
clients_per_process_max = 12_000
# A connection that has not subscribed to anything within this is closed.
unsubscribed_idle_timeout_s = 30.0
# Keepalive: a ping every 20 s; a client that does not answer within 20 s is gone.
ping_interval_s = 20.0
ping_timeout_s = 20.0
# Above this many unsent bytes a client is slow: it stops getting direct writes, and its states
# coalesce while a writer task waits for its socket to drain. Several full states fit under it.
write_buffer_bytes_max = 64 * 1024
redis_retry_delay_initial_s = 0.2
redis_retry_delay_max_s = 10.0
redis_poll_timeout_s = 1.0
close_unauthorized = 4401
close_try_again_later = 1013
close_idle = 4408

# Loads a tenant's state when Redis has none: computes it from the read models and publishes it.
SnapshotSource = Callable[[str], Awaitable[bytes]]


@dataclass(eq=False)
class _Client:
    connection: ServerConnection
    session: Session
    writer: asyncio.Task[None] | None = None


@dataclass
class GatewayStats:
    clients: int = 0
    states_received: int = 0
    frames_sent_direct: int = 0
    frames_sent_by_writer: int = 0
    # Times a client fell behind and its states began to coalesce.
    slow_clients: int = 0
    clients_refused: int = 0


def _write_direct(connections: list[ServerConnection], frame: bytes) -> int:
    """Write one text frame to many connections: encoded once (server frames are not masked and
    compression is off, so the bytes are the same for every client), then handed to each socket.
    Like websockets' `broadcast`, without encoding per connection, which at 10,000 clients is
    most of the cost. Connections that are closing are skipped, as `broadcast` does."""
    wire = Frame(Opcode.TEXT, frame).serialize(mask=False)
    written = 0
    for connection in connections:
        transport = connection.transport
        if connection.protocol.state is not State.OPEN or transport is None:
            continue
        if connection.send_in_progress is not None:  # never: we do not fragment; be safe anyway
            broadcast([connection], frame, text=True)
        else:
            transport.write(wire)
        written += 1
    return written


def _query_token(path: str) -> str | None:
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("token")
    return values[0] if values else None


class Gateway:
    def __init__(
        self, redis_client: Any, jwt_secret: str, snapshot_source: SnapshotSource | None = None
    ) -> None:
        self.redis = redis_client
        self.states = live.KpiStates(redis_client)
        self.jwt_secret = jwt_secret
        self.snapshot_source = snapshot_source
        self.stats = GatewayStats()
        self._clients: set[_Client] = set()
        self._subscribers: dict[str, set[_Client]] = {}
        self._pubsub: Any = redis_client.pubsub()
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._loading: dict[str, asyncio.Future[KpiState | None]] = {}
        self._reloading: asyncio.Task[None] | None = None
        # redis-py's PubSub opens its connection on the first command; two first subscriptions at
        # once would each open one and keep the last, losing the other's channel. One at a time.
        self._pubsub_lock = asyncio.Lock()

    # The websocket side.

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urllib.parse.urlsplit(request.path).path
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path != stream_path:
            return connection.respond(HTTPStatus.NOT_FOUND, f"the stream is at {stream_path}\n")
        return None

    def _token_tenant(self, connection: ServerConnection) -> str:
        request = connection.request
        assert request is not None  # after the handshake
        authorization = request.headers.get("Authorization")
        token = _query_token(request.path)
        if authorization is None and token is not None:
            authorization = f"Bearer {token}"
        return tenant_of(self.jwt_secret, authorization)

    async def handle(self, connection: ServerConnection) -> None:
        try:
            tenant = self._token_tenant(connection)
        except AuthError as error:
            await connection.close(close_unauthorized, str(error)[:120])
            return
        if len(self._clients) >= clients_per_process_max:
            self.stats.clients_refused += 1
            await connection.close(close_try_again_later, "this gateway is full; try another")
            return
        client = _Client(connection, Session(tenant))
        self._clients.add(client)
        self.stats.clients = len(self._clients)
        try:
            await self._serve(client)
        finally:
            await self._forget(client)

    async def _serve(self, client: _Client) -> None:
        while True:
            timeout = None if client.session.tenants else unsubscribed_idle_timeout_s
            try:
                text = await asyncio.wait_for(client.connection.recv(), timeout)
            except TimeoutError:
                await client.connection.close(close_idle, "no subscription")
                return
            except ConnectionClosed:
                return
            for action in client.session.receive(text):
                if isinstance(action, Subscribe):
                    await self._subscribe(client, action.tenant)
                elif isinstance(action, Unsubscribe):
                    await self._unsubscribe(client, action.tenant)
                elif isinstance(action, Close):
                    await client.connection.close(action.code, action.reason)
                    return
            self._flush([client])

    async def _forget(self, client: _Client) -> None:
        self._clients.discard(client)
        self.stats.clients = len(self._clients)
        if client.writer is not None:
            client.writer.cancel()
        for tenant in client.session.tenants:
            await self._unsubscribe(client, tenant)

    # Fan-out.

    def _flush(self, clients: Any, state: KpiState | None = None) -> None:
        """Send what each client has (after offering it `state`): directly when its socket keeps
        up, else by a writer task (the slow path, where states coalesce)."""
        groups: dict[bytes, list[ServerConnection]] = {}
        for client in clients:
            session = client.session
            transport = client.connection.transport
            keeps_up = (
                client.writer is None
                and transport is not None
                and transport.get_write_buffer_size() <= write_buffer_bytes_max
            )
            if state is not None:
                if not keeps_up:
                    session.published(state)
                else:
                    frame = session.send_now(state)
                    if frame is not None:
                        groups.setdefault(frame, []).append(client.connection)
                        continue
            if not session.has_pending():
                continue
            if not keeps_up:
                if client.writer is None:
                    client.writer = asyncio.create_task(self._write(client))
                    self.stats.slow_clients += 1
                continue
            frames = session.take()
            if len(frames) == 1:
                groups.setdefault(frames[0], []).append(client.connection)
            else:  # an error and a state, say: in their order, not grouped with others
                for frame in frames:
                    self.stats.frames_sent_direct += _write_direct([client.connection], frame)
        for frame, connections in groups.items():
            self.stats.frames_sent_direct += _write_direct(connections, frame)

    async def _write(self, client: _Client) -> None:
        try:
            while client.session.has_pending():
                for frame in client.session.take():
                    await client.connection.send(frame, text=True)
                    self.stats.frames_sent_by_writer += 1
        except ConnectionClosed:
            pass
        finally:
            client.writer = None

    def _deliver(self, state: KpiState) -> None:
        self._flush(self._subscribers.get(state.tenant, ()), state)

    # The Redis side.

    async def _subscribe(self, client: _Client, tenant: str) -> None:
        subscribers = self._subscribers.get(tenant)
        if subscribers is None:
            subscribers = self._subscribers[tenant] = set()
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations.setdefault(live.channel(tenant), deque()).append(confirmed)
            async with self._pubsub_lock:
                await self._pubsub.subscribe(live.channel(tenant))
            self._start_listener()
            subscribers.add(client)
            await confirmed
        else:
            subscribers.add(client)
            waiting = self._confirmations.get(live.channel(tenant))
            if waiting:
                await asyncio.shield(waiting[-1])
        state = await self._load(tenant)
        if state is None:
            client.session.unavailable(tenant, "the current state could not be loaded; retry")
        else:
            client.session.loaded(state)

    async def _unsubscribe(self, client: _Client, tenant: str) -> None:
        subscribers = self._subscribers.get(tenant)
        if subscribers is None:
            return
        subscribers.discard(client)
        if not subscribers:
            del self._subscribers[tenant]
            with contextlib.suppress(Exception):
                async with self._pubsub_lock:
                    await self._pubsub.unsubscribe(live.channel(tenant))

    async def _load(self, tenant: str) -> KpiState | None:
        """The tenant's current state, one load at a time per tenant however many clients ask."""
        loading = self._loading.get(tenant)
        if loading is None:
            loading = asyncio.ensure_future(self._load_once(tenant))
            self._loading[tenant] = loading
            loading.add_done_callback(lambda _: self._loading.pop(tenant, None))
        return await asyncio.shield(loading)

    async def _load_once(self, tenant: str) -> KpiState | None:
        try:
            message = await self.states.current(tenant)
            if message is None and self.snapshot_source is not None:
                message = await self.snapshot_source(tenant)
        except Exception as error:
            logger.warning("no snapshot for tenant %s: %r", tenant, error)
            return None
        if message is None:
            return None
        return KpiState.from_message(message)

    def _start_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="gateway-redis-listener")

    async def _listen(self) -> None:
        delay = redis_retry_delay_initial_s
        lost = False
        while True:
            try:
                message = await self._pubsub.get_message(timeout=redis_poll_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not lost:
                    logger.warning("Redis pub/sub lost (%r); retrying", error)
                lost = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, redis_retry_delay_max_s)
                continue
            if lost:
                lost, delay = False, redis_retry_delay_initial_s
                logger.warning("Redis pub/sub back; reloading %d tenants", len(self._subscribers))
                self._reloading = asyncio.create_task(self._reload_all())
            if message is not None:
                self._on_message(message)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if not isinstance(channel, str):
            return
        if kind == "subscribe":
            waiting = self._confirmations.get(channel)
            if waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_result(None)
                if not waiting:
                    del self._confirmations[channel]
            return
        if kind != "message":
            return
        try:
            state = KpiState.from_message(message["data"])
        except ValueError as error:
            logger.warning("ignoring a message on %s that is not a KPI state: %r", channel, error)
            return
        self.stats.states_received += 1
        self._deliver(state)

    async def _reload_all(self) -> None:
        for tenant in list(self._subscribers):
            state = await self._load(tenant)
            if state is not None:
                self._deliver(state)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()


@dataclass
class RunningGateway:
    gateway: Gateway
    server: Server
    port: int
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        await self.gateway.close()
        for closer in reversed(self._closers):
            await closer()


async def start_gateway(
    host: str,
    port: int,
    redis_url: str,
    jwt_secret: str,
    database_url: str | None = None,
) -> RunningGateway:
    """Serve `/v1/stream` on host:port (0: a free port); snapshots Redis lacks come from
    `database_url`'s read models when it is given."""
    import redis.asyncio

    redis_client = redis.asyncio.Redis.from_url(redis_url)
    closers: list[Callable[[], Awaitable[None]]] = [redis_client.aclose]
    snapshot_source: SnapshotSource | None = None
    if database_url is not None:
        snapshot_source, close_source = await _read_model_source(database_url, redis_client)
        closers.append(close_source)
    gateway = Gateway(redis_client, jwt_secret, snapshot_source)
    server = await serve(
        gateway.handle,
        host,
        port,
        process_request=gateway.process_request,
        max_size=message_bytes_max,
        max_queue=4,
        write_limit=write_buffer_bytes_max,
        ping_interval=ping_interval_s,
        ping_timeout=ping_timeout_s,
        compression=None,
    )
    bound_port = next(iter(server.sockets)).getsockname()[1]
    return RunningGateway(gateway, server, bound_port, closers)


async def _read_model_source(
    database_url: str, redis_client: Any
) -> tuple[SnapshotSource, Callable[[], Awaitable[None]]]:
    from datetime import UTC, datetime

    from psycopg import AsyncConnection

    from ledger.store.postgres import configure_connection

    states = live.KpiStates(redis_client)
    lock = asyncio.Lock()
    holder: dict[str, AsyncConnection[Any]] = {}

    async def source(tenant: str) -> bytes:
        async with lock:  # one connection: snapshots from the database are rare
            conn = holder.get("conn")
            if conn is None or conn.closed or conn.broken:
                conn = await AsyncConnection.connect(database_url, autocommit=True)
                await configure_connection(conn)
                holder["conn"] = conn
            return await live.publish_kpis(conn, states, tenant, datetime.now(UTC).date())

    async def close() -> None:
        conn = holder.get("conn")
        if conn is not None:
            await conn.close()

    return source, close
