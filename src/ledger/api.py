"""The HTTP API (aiohttp): `POST /v1/events`, `GET /v1/events`, `GET /v1/reports/{kind}`,
`GET /v1/audit/verify`, `GET /v1/audit/tree-head|inclusion|consistency`, `GET /healthz`, `GET /metrics`, and the live dashboard: `GET /` (its page),
`GET /dashboard/{name}` (its scripts and style) and `GET /v1/dashboard/config` (the gateway's URL).

Answers are JSON. A rejected batch answers 422 and lists every rejection with its index, id, code,
field and message; nothing of it is appended. Requests over the named limits answer 413, bodies that
are not JSON 400, unsupported media types 415, and an unreachable database 503 with Retry-After.
No traceback ever reaches a caller: unexpected errors are logged and answered 500 with a reference.

With a JWT secret configured, every request needs `Authorization: Bearer <jwt>` (401 otherwise), and
may only write or read the tenant of its `tenant` claim (403 otherwise; `*` acts for all). The
dashboard's files and its config are open: they hold no tenant's data, and a browser cannot send a
header when it opens a page; the page sends the token with every report it fetches.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ledger.auth import AuthError, may_act_for, tenant_of
from ledger.contract import tenant_pattern
from ledger.errors import LedgerError, RejectionCode, StoreError, StoreUnavailableError
from ledger.service import LedgerService

if TYPE_CHECKING:
    from ledger.signed_note import Signer
from ledger.store import position_max, read_limit_max, whole_number

logger = logging.getLogger(__name__)

# A batch is one transaction under the append lock: 1,000 events keep that lock short (a few ms)
# while amortising the round trips. 4 MiB holds 1,000 events of ~4 KiB, far above typical events.
request_events_max = 1000
request_body_bytes_max = 4 * 1024 * 1024
events_page_limit_default = 100
retry_after_s = 1

accepted_media_types = frozenset(
    {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
)

# The dashboard's static files (src/gateway/dashboard/) by suffix: only these are served.
dashboard_content_types = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
dashboard_index = "index.html"
# The page loads only its own files; its websocket goes to the gateway, on another port.
dashboard_headers = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (an ETag makes that a 304): a new version is seen at once.
    "Cache-Control": "no-cache",
}

service_key = web.AppKey("service", LedgerService)
secret_key: web.AppKey[str | None] = web.AppKey("jwt_secret")
gateway_url_key: web.AppKey[str | None] = web.AppKey("gateway_url")
audit_signer_key: web.AppKey[Signer | None] = web.AppKey("audit_signer")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, code: str, message: str, field: str = "") -> web.Response:
    rejection = {"index": None, "id": None, "code": code, "field": field, "message": message}
    return _json({"appended": [], "duplicates": [], "rejected": [rejection]}, status=status)


def _query_error(status: int, code: str, message: str, field: str = "") -> web.Response:
    """The error answer of a read (a report, the event listing): one error, its field."""
    return _json({"error": {"code": code, "field": field, "message": message}}, status=status)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except StoreUnavailableError:
        logger.warning("event store unavailable", exc_info=True)
        return _json(
            {
                "error": {
                    "code": "store_unavailable",
                    "message": "the event store is unavailable; retry",
                }
            },
            status=503,
            headers={"Retry-After": str(retry_after_s)},
        )
    except (StoreError, LedgerError, Exception):
        reference = uuid.uuid4().hex[:12]
        logger.exception(
            "unexpected error handling %s %s (reference %s)",
            request.method,
            request.path,
            reference,
        )
        return _json(
            {
                "error": {
                    "code": "internal_error",
                    "message": f"unexpected error (reference {reference})",
                }
            },
            status=500,
        )


async def _read_body(request: web.Request) -> bytes | web.Response:
    if request.content_length is not None and request.content_length > request_body_bytes_max:
        return _error(
            413, "request_too_large", f"the body is over {request_body_bytes_max} bytes", "body"
        )
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body.extend(chunk)
        if len(body) > request_body_bytes_max:
            return _error(
                413, "request_too_large", f"the body is over {request_body_bytes_max} bytes", "body"
            )
    return bytes(body)


def _token_tenant(request: web.Request) -> str | web.Response | None:
    """The tenant the caller's token speaks for; None when the API is open (no secret)."""
    secret = request.app[secret_key]
    if secret is None:
        return None
    try:
        return tenant_of(secret, request.headers.get("Authorization"))
    except AuthError as error:
        return _json(
            {"error": {"code": "unauthorized", "message": str(error)}},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="ledger"'},
        )


def _forbidden(tenant: object) -> web.Response:
    return _json(
        {
            "error": {
                "code": "tenant_not_allowed",
                "message": f"the token does not allow acting for tenant {tenant!r}",
            }
        },
        status=403,
    )


async def post_events(request: web.Request) -> web.Response:
    token_tenant = _token_tenant(request)
    if isinstance(token_tenant, web.Response):
        return token_tenant
    if request.content_type not in accepted_media_types:
        return _json(
            {
                "error": {
                    "code": "unsupported_media_type",
                    "message": "send application/json, application/cloudevents+json or "
                    "application/cloudevents-batch+json",
                }
            },
            status=415,
        )
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return _error(400, RejectionCode.malformed_json, f"the body is not valid JSON: {error}")
    events = decoded if isinstance(decoded, list) else [decoded]
    if len(events) > request_events_max:
        return _error(
            413,
            "too_many_events",
            f"{len(events)} events in one request; at most {request_events_max}",
            "body",
        )
    if not events:
        return _json({"appended": [], "duplicates": []})
    if token_tenant is not None:
        for event in events:
            tenant = event.get("tenantid") if isinstance(event, dict) else None
            if not may_act_for(token_tenant, str(tenant)):
                return _forbidden(tenant)
    report = await request.app[service_key].append(events, atomic=True)
    if report.rejected:
        return _json(report.as_json(), status=422)
    return _json(
        {
            "appended": [
                {key: entry[key] for key in ("id", "position", "stream_version")}
                for entry in report.appended
            ],
            "duplicates": [
                {key: entry[key] for key in ("id", "position")} for entry in report.duplicates
            ],
        }
    )


def _int_param(request: web.Request, name: str, default: int, minimum: int) -> int | web.Response:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    value = whole_number(text)
    if value is None or value < minimum:
        return _query_error(
            400, "invalid_value", f"must be a whole number from {minimum} to {position_max}", name
        )
    return value


def _queried_tenant(
    request: web.Request, invalid: Callable[[int, str, str, str], web.Response]
) -> str | web.Response:
    """`?tenant=` of a read: the token must allow it (401/403), and it must be a tenant id
    (`invalid` builds the 400 in the route's own error shape)."""
    token_tenant = _token_tenant(request)
    if isinstance(token_tenant, web.Response):
        return token_tenant
    tenant = request.query.get("tenant", "")
    if token_tenant is not None and not may_act_for(token_tenant, tenant):
        return _forbidden(tenant)
    if not tenant_pattern.match(tenant):
        return invalid(400, "invalid_tenant", "a tenant id is required (?tenant=...)", "tenant")
    return tenant


async def get_events(request: web.Request) -> web.Response:
    """`GET /v1/events?tenant=&from_position=&limit=`: a tenant's events in position order. A bad
    parameter answers 400 `{"error": {"code", "field", "message"}}`, as the other reads do (the
    append's answer shape, with its empty `appended` and `duplicates`, belongs to appends)."""
    tenant = _queried_tenant(request, _query_error)
    if isinstance(tenant, web.Response):
        return tenant
    from_position = _int_param(request, "from_position", 1, 1)
    if isinstance(from_position, web.Response):
        return from_position
    limit = _int_param(request, "limit", events_page_limit_default, 1)
    if isinstance(limit, web.Response):
        return limit
    limit = min(limit, read_limit_max)
    events = await request.app[service_key].store.read(tenant, from_position, limit)
    next_position = events[-1].position + 1 if events else from_position
    return _json({"events": [event.as_json() for event in events], "next_position": next_position})


async def get_report(request: web.Request) -> web.Response:
    """`GET /v1/reports/{kind}?tenant=&as_of=YYYY-MM-DD[&limit=N][&after=ID][&invoices_after=C]`:
    the CLI's `ledger report` (`limit` caps each list, `after` pages the report's list of
    customers or contracts, `invoices_after` AR aging's invoices)."""
    from ledger.store.postgres import PostgresEventStore
    from projections import reports

    tenant = _queried_tenant(request, _query_error)
    if isinstance(tenant, web.Response):
        return tenant
    try:
        kind = reports.parse_kind(request.match_info["kind"])
        as_of = reports.parse_as_of(request.query.get("as_of"))
    except reports.ReportError as error:
        status = 404 if error.field == "kind" else 400
        return _query_error(status, f"invalid_{error.field}", error.reason, error.field)
    limit: int | None = None
    if request.query.get("limit"):
        limit = whole_number(request.query["limit"])
        if limit is None:
            return _query_error(
                400, "invalid_value", f"must be a whole number from 0 to {position_max}", "limit"
            )
    after = request.query.get("after")
    invoices_after = request.query.get("invoices_after")
    try:
        reports.check_page(kind, limit, after, invoices_after)
    except reports.ReportError as error:
        return _query_error(400, "invalid_value", error.reason, error.field)
    store = request.app[service_key].store
    if not isinstance(store, PostgresEventStore):
        return _query_error(501, "no_read_models", "reports need the PostgreSQL store", "")
    async with store.connection() as conn:
        data = await reports.fresh_report(
            store,
            conn,
            kind,
            tenant,
            as_of,
            limit=limit,
            after=after,
            invoices_after=invoices_after,
        )
    return _json(data)


async def get_audit_verify(request: web.Request) -> web.Response:
    """`GET /v1/audit/verify?tenant=`: the CLI's `ledger audit verify`. 200 either way: whether
    the chain holds is the answer's `ok` (and `broken_at_position`), not an HTTP failure."""
    from ledger.store.postgres import PostgresEventStore
    from projections.audit_verify import verify

    tenant = _queried_tenant(request, _error)
    if isinstance(tenant, web.Response):
        return tenant
    store = request.app[service_key].store
    if not isinstance(store, PostgresEventStore):
        return _error(501, "no_read_models", "the audit chain needs the PostgreSQL store")
    async with store.connection() as conn:
        return _json(await verify(store, conn, tenant))


async def get_audit_proof(request: web.Request) -> web.Response:
    """`GET /v1/audit/tree-head?tenant=[&size=N]`, `GET /v1/audit/inclusion?tenant=&position=
    [&size=N]`, `GET /v1/audit/consistency?tenant=&first=M[&second=N]`: the CLI's `ledger audit
    tree-head|prove|consistency` (`projections.audit_proofs`)."""
    from ledger.store.postgres import PostgresEventStore
    from projections import audit_proofs

    tenant = _queried_tenant(request, _query_error)
    if isinstance(tenant, web.Response):
        return tenant
    kind = request.match_info["kind"]
    required = {"tree-head": (), "inclusion": ("position",), "consistency": ("first",)}[kind]
    numbers: dict[str, int] = {}
    for name in ("size", "position", "first", "second"):
        if not request.query.get(name):
            if name in required:
                return _query_error(400, "invalid_value", "is required", name)
            continue
        value = _int_param(request, name, 0, 0)
        if isinstance(value, web.Response):
            return value
        numbers[name] = value
    store = request.app[service_key].store
    if not isinstance(store, PostgresEventStore):
        return _query_error(501, "no_read_models", "the audit chain needs the PostgreSQL store")
    try:
        async with store.connection() as conn:
            if kind == "tree-head":
                answer = await audit_proofs.tree_head(
                    store, conn, tenant, numbers.get("size"), request.app[audit_signer_key]
                )
            elif kind == "inclusion":
                answer = await audit_proofs.inclusion(
                    store, conn, tenant, numbers["position"], numbers.get("size")
                )
            else:
                answer = await audit_proofs.consistency(
                    store, conn, tenant, numbers["first"], numbers.get("second")
                )
        return _json(answer)
    except audit_proofs.ProofError as error:
        return _query_error(400, "invalid_value", error.reason, error.field)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    head = await request.app[service_key].store.head()
    return _json({"status": "ok", "head": head})


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def dashboard_files() -> dict[str, StaticFile]:
    """The dashboard's files by name, read once: a request's name is only ever a key into this,
    never part of a path, so nothing outside the folder can be reached."""
    folder = importlib.resources.files("gateway") / "dashboard"
    files: dict[str, StaticFile] = {}
    for entry in folder.iterdir():
        content_type = dashboard_content_types.get(PurePosixPath(entry.name).suffix)
        if content_type is None or entry.name.startswith(".") or not entry.is_file():
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[entry.name] = StaticFile(body, content_type, etag)
    return files


dashboard_files_key = web.AppKey("dashboard_files", dict[str, StaticFile])


def _static(request: web.Request, name: str) -> web.Response:
    found = request.app[dashboard_files_key].get(name)
    if found is None:
        return _query_error(404, "not_found", f"no dashboard file {name!r}", "name")
    headers = {**dashboard_headers, "ETag": found.etag}
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, headers={**headers, "Content-Type": found.content_type})


async def get_dashboard_page(request: web.Request) -> web.Response:
    return _static(request, dashboard_index)


async def get_dashboard_file(request: web.Request) -> web.Response:
    return _static(request, request.match_info["name"])


async def get_dashboard_config(request: web.Request) -> web.Response:
    """`GET /v1/dashboard/config`: where the page opens its websocket."""
    gateway_url = request.app[gateway_url_key]
    if gateway_url is None:
        return _query_error(
            404,
            "no_gateway",
            "this API was started without a websocket gateway, so the dashboard cannot show "
            "live figures (`ledger up` runs one)",
        )
    return _json({"gateway_url": gateway_url}, headers={"Cache-Control": "no-store"})


def make_app(
    service: LedgerService,
    jwt_secret: str | None = None,
    gateway_url: str | None = None,
    audit_signer: Signer | None = None,
) -> web.Application:
    """The API; `gateway_url` (e.g. "ws://127.0.0.1:8765/v1/stream") is what the dashboard's
    config answers, None when no gateway runs beside this API; `audit_signer` signs the audit
    tree heads' checkpoints."""
    # aiohttp's own limit is a backstop above ours, so our 413 answer (JSON, named) is what callers see.
    app = web.Application(
        middlewares=[_errors_middleware], client_max_size=request_body_bytes_max + 1
    )
    app[service_key] = service
    app[secret_key] = jwt_secret
    app[gateway_url_key] = gateway_url
    app[audit_signer_key] = audit_signer
    app[dashboard_files_key] = dashboard_files()
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/reports/{kind}", get_report)
    app.router.add_get("/v1/audit/verify", get_audit_verify)
    app.router.add_get("/v1/audit/{kind:tree-head|inclusion|consistency}", get_audit_proof)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/", get_dashboard_page)
    app.router.add_get("/dashboard/{name}", get_dashboard_file)
    app.router.add_get("/v1/dashboard/config", get_dashboard_config)
    return app
