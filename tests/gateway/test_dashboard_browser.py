"""The dashboard page in headless Chromium (Debian's package, driven over the DevTools protocol).

- On the real stack: `ledger up` as a subprocess (API, relay, worker, gateway), events appended
  over HTTP, the page opened with a tenant's token. It shows the KPIs computed by hand (AR, MRR,
  ...) and the three report charts, then the new figure after another invoice is appended, and
  never anything of another tenant, whose events are appended alongside.
- Against a scripted gateway (a websockets server in the test that speaks DESIGN section 8) and the
  real HTTP API: the protocol edges the real gateway produces only rarely. A jump in seq is shown,
  a stale update or another tenant's frame is ignored, a dropped connection is resubscribed with
  "since", a burst of updates costs at most two rounds of report fetches (the last with the newest
  as_of), an error frame is shown, a "*" token asks for a tenant, and close code 4401 stops the page
  and asks for a new token instead of reconnecting.

Skipped only when there is no chromium: `.ci/run` installs it when it can.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from ledger.api import make_app
from ledger.auth import AuthError, issue_token, tenant_of
from ledger.embedded import free_loopback_port
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from projections.reports import fresh_report, kpi_names
from tests.gateway.chromium import Browser, Page, chromium_executable
from tests.ledger import store_builders
from tests.ledger.events import customer, invoice, new_tenant, payment

src_dir = Path(__file__).resolve().parents[2] / "src"
secret = "dashboard-browser-test-secret-with-enough-bytes"
# `ledger up` answers /healthz within seconds; the worker joins its consumer group on tansu and
# the first states reach Redis within 5-20 s more. Generous: CI machines are slow and shared.
startup_timeout_s = 60.0
figure_timeout_s = 90.0
frame_timeout_s = 30.0
# How long the page is watched to make sure it does not reconnect after a 4401.
no_reconnect_watch_s = 4.0

kpi_keys = list(kpi_names)


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            "no chromium at /usr/bin/chromium or on PATH: .ci/run installs Debian's chromium "
            "package when it can (apt-get as root); install it to run the dashboard browser tests"
        )
    return executable


@pytest.fixture
async def browser(chromium: str, tmp_path: Path) -> AsyncIterator[Browser]:
    launched = await Browser.launch(chromium, tmp_path / "chromium")
    try:
        yield launched
    finally:
        await launched.close()


def kpi_value(page: Page, key: str) -> Any:
    return page.evaluate(f"document.querySelector('[data-kpi=\"{key}\"]').dataset.value")


# --- the real stack -----------------------------------------------------------------------------


def _environment(**values: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(values)
    environment["PYTHONPATH"] = os.pathsep.join([str(src_dir), environment.get("PYTHONPATH", "")])
    return environment


def _request(url: str, token: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=None if body is None else orjson.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read() or b"null")


@dataclass
class RunningUp:
    process: subprocess.Popen[bytes]
    api: str
    admin_token: str

    def append(self, *events: dict[str, Any]) -> list[int]:
        status, answer = _request(f"{self.api}/v1/events", self.admin_token, list(events))
        assert status == 200, answer
        return [entry["position"] for entry in answer["appended"]]


@pytest.fixture
async def ledger_up(
    new_database: Callable[[], str],
    kafka_environment: dict[str, str],
    redis_url: str,
    tmp_path: Path,
) -> AsyncIterator[RunningUp]:
    """`ledger up` on a fresh database, with the session's broker and Redis; SIGTERM at the end,
    and it must then exit cleanly."""
    api_port, gateway_port = free_loopback_port(), free_loopback_port()
    log_path = tmp_path / "ledger-up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledger.cli",
                "up",
                "--api-port",
                str(api_port),
                "--gateway-port",
                str(gateway_port),
                "--data-dir",
                str(tmp_path / "data"),
            ],
            env=_environment(
                LEDGER_DATABASE_URL=new_database(),
                LEDGER_REDIS_URL=redis_url,
                LEDGER_JWT_SECRET=secret,
                **kafka_environment,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningUp(process, f"http://127.0.0.1:{api_port}", issue_token(secret, "*"))
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")
            try:
                status, _ = _request(f"{running.api}/healthz", running.admin_token)
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "ledger up did not answer /healthz"
            await asyncio.sleep(0.2)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = log_path.read_text(errors="replace")
    assert process.returncode == 0, output
    assert "Traceback" not in output, output


def contract_for_mrr(tenant: str) -> dict[str, Any]:
    """A year's contract whose recurring line (1,200.00 over 12 months) is 100.00 of MRR."""
    event = store_builders.contract("K1", "C1", start_date="2026-01-01", end_date="2027-01-01")
    event["tenantid"] = tenant
    return event


async def wait_for_position(gateway_url: str, token: str, tenant: str, position: int) -> None:
    """Subscribe like the page does and wait for a state at `position` or later."""
    async with connect(f"{gateway_url}?token={token}") as connection:
        await connection.send(
            orjson.dumps({"type": "subscribe", "channel": "kpi:update", "tenant": tenant}).decode()
        )
        deadline = time.monotonic() + figure_timeout_s
        while True:
            remaining_s = deadline - time.monotonic()
            assert remaining_s > 0, f"the gateway sent no state at position {position} for {tenant}"
            frame = orjson.loads(await asyncio.wait_for(connection.recv(), remaining_s))
            assert frame.get("type") != "error", frame
            if frame.get("position", 0) >= position:
                return


async def test_the_dashboard_shows_live_figures_from_the_real_stack(
    ledger_up: RunningUp, browser: Browser
) -> None:
    tenant, other = new_tenant(), new_tenant()
    # Tenant A: invoices of 1,200.00 and 300.00, a payment of 500.00 applied oldest due first:
    # AR = 1,200.00 + 300.00 - 500.00 = 1,000.00. MRR 100.00 from the contract.
    positions = ledger_up.append(
        customer(tenant),
        contract_for_mrr(tenant),
        invoice(tenant, "INV-1", amount="1200.00", issue_date="2026-01-15", due_date="2026-02-14"),
        invoice(tenant, "INV-2", amount="300.00", issue_date="2026-01-20", due_date="2026-02-19"),
        payment(tenant, "PAY-1", amount="500.00"),
    )
    # Tenant B: figures that must never appear on A's page.
    ledger_up.append(
        customer(other), invoice(other, "INV-B", amount="7777.77", issue_date="2026-01-15")
    )

    # The worker has projected A once the gateway pushes a state at A's last position. Until then
    # the page's report requests would be the tenant's first catch-up, racing the worker's (see
    # the scripted test): the page copes, but the server logs the failed request.
    status, config = _request(f"{ledger_up.api}/v1/dashboard/config", ledger_up.admin_token)
    assert status == 200, config
    await wait_for_position(
        config["gateway_url"], issue_token(secret, tenant), tenant, positions[-1]
    )

    page = await browser.new_page()
    await page.goto(f"{ledger_up.api}/?token={issue_token(secret, tenant)}")
    await page.wait_for(
        "document.querySelector('[data-kpi=\"ar\"]').dataset.value === '1000.00'",
        "AR to show 1000.00",
        figure_timeout_s,
    )
    assert await page.evaluate("document.getElementById('kpi-ar').textContent") == "$1,000.00"
    assert await kpi_value(page, "mrr") == "100.00"
    assert await kpi_value(page, "arr") == "1200.00"
    assert await kpi_value(page, "active_contracts") == "1"
    assert await page.evaluate("document.getElementById('connection').dataset.state") == "live"
    assert await page.evaluate("document.getElementById('tenant').dataset.tenant") == tenant
    first_position = int(
        await page.evaluate("document.getElementById('freshness').dataset.position")
    )
    assert first_position >= 5
    # The token left the address bar once read.
    assert "token=" not in await page.evaluate("location.href")

    # The charts, from the HTTP reports: INV-1 is partly paid (1,200.00 - 500.00 = 700.00 open).
    await page.wait_for(
        "document.getElementById('ar-aging').dataset.loaded === 'true'"
        " && document.getElementById('mrr-movements').dataset.loaded === 'true'"
        " && document.getElementById('deferred-revenue').dataset.loaded === 'true'",
        "the three report panels to load",
        figure_timeout_s,
    )
    aging_total = await page.evaluate(
        "document.querySelector('#ar-aging-summary [data-field=\"total\"]').dataset.value"
    )
    assert aging_total == "1000.00"
    bars = await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#ar-aging-chart .column')]"
        ".map((bar) => [bar.dataset.key, bar.dataset.amount]))"
    )
    assert set(bars) == {"current", "1-30", "31-60", "61-90", "91-120", "over-120"}
    assert sum(Decimal(amount) for amount in bars.values()) == Decimal("1000.00")
    ending_mrr = await page.evaluate(
        "document.querySelector('#mrr-movements-chart [data-key=\"ending_mrr\"]').dataset.amount"
    )
    assert ending_mrr == "100.00"
    assert await page.evaluate("document.getElementById('mrr-movements-chart').dataset.addsUp")
    assert (
        await page.evaluate("document.querySelectorAll('#deferred-revenue-chart .column').length")
        >= 2
    )

    # A new invoice for A (and one for B at the same time): A's page moves to 1,250.00.
    ledger_up.append(invoice(tenant, "INV-3", amount="250.00", issue_date="2026-02-01"))
    ledger_up.append(invoice(other, "INV-B2", amount="1111.11", issue_date="2026-02-01"))
    await page.wait_for(
        "document.querySelector('[data-kpi=\"ar\"]').dataset.value === '1250.00'",
        "AR to move to 1250.00 after the new invoice",
        figure_timeout_s,
    )
    assert await page.evaluate("document.getElementById('kpi-ar').textContent") == "$1,250.00"
    assert (
        int(await page.evaluate("document.getElementById('freshness').dataset.position"))
        > first_position
    )
    await page.wait_for(
        "document.querySelector('#ar-aging-summary [data-field=\"total\"]')"
        ".dataset.value === '1250.00'",
        "the AR aging chart to follow",
        figure_timeout_s,
    )

    # Nothing of tenant B reached the page: not in a frame, not on screen.
    text = await page.evaluate("document.body.innerText")
    for figure in ("7777.77", "7,777.77", "1111.11", "1,111.11", other):
        assert figure not in text
    frames = [orjson.loads(frame) for frame in page.frames_received]
    assert frames, "the page received no websocket frame"
    assert {frame.get("tenant") for frame in frames} == {tenant}
    assert all(other not in raw and "7777.77" not in raw for raw in page.frames_received)

    # A token for A with ?tenant=B in the URL still shows A: the token decides.
    second = await browser.new_page()
    await second.goto(f"{ledger_up.api}/?token={issue_token(secret, tenant)}&tenant={other}")
    await second.wait_for(
        "document.querySelector('[data-kpi=\"ar\"]').dataset.value === '1250.00'",
        "the second page to show A's AR",
        figure_timeout_s,
    )
    assert all(other not in raw for raw in second.frames_received)

    # A token the gateway cannot verify: it closes with 4401, and the page asks for a new token
    # instead of reconnecting.
    forged = issue_token("not-the-ledger-secret-but-long-enough-for-hs256", tenant)
    third = await browser.new_page()
    await third.goto(f"{ledger_up.api}/?token={forged}")
    await third.wait_for(
        "document.getElementById('connection').dataset.state === 'unauthorized'"
        " && !document.getElementById('sign-in').hidden",
        "the page to show the refused token",
        frame_timeout_s,
    )
    await asyncio.sleep(no_reconnect_watch_s)
    assert len(third.sockets) == 1, third.sockets
    assert third.frames_received == []


# --- a scripted gateway -------------------------------------------------------------------------


@dataclass
class ScriptedGateway:
    """A websockets server that checks tokens like the gateway (4401) and hands every accepted
    connection to the test, which then plays the server's side of the protocol by hand."""

    connections: asyncio.Queue[tuple[ServerConnection, str]] = field(default_factory=asyncio.Queue)
    refused: int = 0
    url: str = ""

    async def handle(self, connection: ServerConnection) -> None:
        query = connection.request.path.partition("?")[2] if connection.request else ""
        token = dict(part.partition("=")[::2] for part in query.split("&") if part).get("token")
        try:
            tenant = tenant_of(secret, f"Bearer {urllib.request.unquote(token or '')}")
        except AuthError as error:
            self.refused += 1
            await connection.close(4401, str(error)[:100])
            return
        await self.connections.put((connection, tenant))
        await connection.wait_closed()

    async def accept(self) -> tuple[ServerConnection, str, dict[str, Any]]:
        """The next connection, its token's tenant and its first (subscribe) message."""
        connection, tenant = await asyncio.wait_for(self.connections.get(), frame_timeout_s)
        subscribe = orjson.loads(await asyncio.wait_for(connection.recv(), frame_timeout_s))
        return connection, tenant, subscribe


def state_frame(
    tenant: str, seq: int, ar: str, *, kind: str = "kpi:update", as_of: str = "2026-01-31"
) -> str:
    kpis: dict[str, Any] = dict.fromkeys(kpi_keys, "0.00")
    kpis.update(ar=ar, margin_mtd=None, ar_over_90_share="0.25", dso="41.3", customers=1, nrr=None)
    return orjson.dumps(
        {
            "type": kind,
            "channel": "kpi:update",
            "tenant": tenant,
            "seq": seq,
            "position": 100 + seq,
            "as_of": as_of,
            "currency": "USD",
            "kpis": kpis,
            "alerts": [{"code": "ar_over_90_days", "message": "25.00 % of receivables are old"}],
            "updated_at": datetime.now(UTC).isoformat(),
        }
    ).decode()


@pytest.fixture
async def scripted(
    database_url: str,
) -> AsyncIterator[tuple[ScriptedGateway, str, PostgresEventStore]]:
    """The scripted gateway and the real HTTP API (in this process, over the session database)
    whose config points at it: (gateway, API base URL, store)."""
    gateway = ScriptedGateway()
    store = await PostgresEventStore.open(database_url)
    async with serve(gateway.handle, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        gateway.url = f"ws://127.0.0.1:{port}/v1/stream"
        app = make_app(LedgerService(store), jwt_secret=secret, gateway_url=gateway.url)
        async with TestServer(app, host="127.0.0.1") as api:
            yield gateway, str(api.make_url("")).rstrip("/"), store
    await store.close()


def report_fetches(page: Page) -> Any:
    return page.evaluate(
        "performance.getEntriesByType('resource')"
        ".filter((entry) => entry.name.includes('/v1/reports/ar-aging')).length"
    )


async def test_the_page_follows_the_protocol_against_a_scripted_gateway(
    scripted: tuple[ScriptedGateway, str, PostgresEventStore], browser: Browser
) -> None:
    gateway, api, store = scripted
    tenant, other = new_tenant(), new_tenant()
    report = await LedgerService(store).append(
        [
            customer(tenant),
            invoice(tenant, "INV-1", amount="1000.00", issue_date="2026-01-15"),
        ],
        atomic=True,
    )
    assert not report.rejected, report.as_json()
    # Project the tenant's first events before the page's three parallel report requests do: the
    # first catch-up of a new tenant is not yet safe against a concurrent one (duplicate rows).
    async with store.connection() as conn:
        await fresh_report(store, conn, "kpi", tenant, date(2026, 1, 31))

    page = await browser.new_page()
    await page.goto(f"{api}/#token={issue_token(secret, tenant)}")
    connection, token_tenant, subscribe = await gateway.accept()
    assert token_tenant == tenant
    assert subscribe == {"type": "subscribe", "channel": "kpi:update", "tenant": tenant}
    assert "token=" not in await page.evaluate("location.href")

    await connection.send(state_frame(tenant, 3, "1000.00", kind="snapshot"))
    await page.wait_for("document.getElementById('kpi-ar').dataset.value === '1000.00'", "AR")
    assert await page.evaluate("document.getElementById('kpi-ar').textContent") == "$1,000.00"
    assert await page.evaluate("document.getElementById('kpi-margin_mtd').textContent") == "—"
    assert (
        await page.evaluate("document.getElementById('kpi-ar_over_90_share').textContent") == "25 %"
    )
    assert await page.evaluate("document.getElementById('kpi-dso').textContent") == "41.3 days"
    assert await page.evaluate("document.getElementById('freshness').dataset.seq") == "3"
    assert await page.evaluate("document.getElementById('freshness').dataset.position") == "103"
    assert await page.evaluate("document.getElementById('alerts').innerText") == (
        "25.00 % of receivables are old"
    )
    # The AR aging chart comes from the real report for the frame's as_of.
    await page.wait_for(
        "document.getElementById('ar-aging').dataset.loaded === 'true'", "the AR aging report"
    )
    assert (
        await page.evaluate(
            "document.querySelector('#ar-aging-chart [data-key=\"current\"]').dataset.amount"
        )
        == "1000.00"
    )

    # seq jumps (coalesced updates) are shown; stale updates and other tenants' frames are not.
    await connection.send(state_frame(tenant, 9, "1250.50"))
    await page.wait_for("document.getElementById('kpi-ar').dataset.value === '1250.50'", "seq 9")
    await connection.send(state_frame(tenant, 8, "1.00"))
    await connection.send(state_frame(other, 10, "7777.77"))
    await connection.send(state_frame(tenant, 10, "1300.00"))
    await page.wait_for("document.getElementById('kpi-ar').dataset.value === '1300.00'", "seq 10")
    assert "7,777.77" not in await page.evaluate("document.body.innerText")
    assert await page.evaluate("document.getElementById('freshness').dataset.seq") == "10"

    # A burst of updates: at most two rounds of report fetches, the last for the newest as_of.
    await asyncio.sleep(2.5)
    fetched_before = await report_fetches(page)
    for seq in range(11, 21):
        await connection.send(state_frame(tenant, seq, f"{seq}00.00", as_of=f"2026-02-{seq:02d}"))
    await page.wait_for(
        "document.getElementById('ar-aging').dataset.asOf === '2026-02-20'",
        "the reports for the newest as_of",
    )
    await asyncio.sleep(2.5)
    assert await report_fetches(page) - fetched_before <= 2
    assert await page.evaluate("document.getElementById('kpi-ar').dataset.value") == "2000.00"

    # An error frame is shown; a dropped connection is resubscribed with since and the position
    # of the state the page shows (after a Redis reset the same seq can name another state).
    await connection.send(
        orjson.dumps({"type": "error", "code": "tenant_not_allowed", "message": "no"}).decode()
    )
    await page.wait_for(
        "document.getElementById('banner').textContent.includes('tenant_not_allowed')",
        "the error frame",
    )
    await connection.close(1011, "gateway restarting")
    connection, _, subscribe = await gateway.accept()
    assert subscribe == {
        "type": "subscribe",
        "channel": "kpi:update",
        "tenant": tenant,
        "since": 20,
        "position": 120,
    }
    await connection.send(state_frame(tenant, 21, "2100.00", kind="snapshot"))
    await page.wait_for("document.getElementById('kpi-ar').dataset.value === '2100.00'", "resume")
    assert await page.evaluate("document.getElementById('connection').dataset.state") == "live"

    # 4401: the page stops and asks for a new token; it does not reconnect.
    sockets_before = len(page.sockets)
    await connection.close(4401, "the token has expired")
    await page.wait_for(
        "document.getElementById('connection').dataset.state === 'unauthorized'"
        " && !document.getElementById('sign-in').hidden",
        "the page to ask for a new token",
    )
    assert "expired" in await page.evaluate(
        "document.getElementById('sign-in-message').textContent"
    )
    await asyncio.sleep(no_reconnect_watch_s)
    assert len(page.sockets) == sockets_before
    assert gateway.connections.empty()


async def test_a_star_token_asks_for_the_tenant_and_a_bad_token_is_refused(
    scripted: tuple[ScriptedGateway, str, PostgresEventStore], browser: Browser
) -> None:
    gateway, api, _ = scripted
    tenant = new_tenant()
    page = await browser.new_page()
    await page.goto(f"{api}/?token={issue_token(secret, '*')}")
    await page.wait_for("!document.getElementById('sign-in').hidden", "the tenant question")
    assert "type the tenant" in await page.evaluate(
        "document.getElementById('sign-in-message').textContent"
    )
    await page.evaluate(
        f"document.getElementById('tenant-input').value = '{tenant}';"
        "document.getElementById('token-form').requestSubmit()"
    )
    connection, token_tenant, subscribe = await gateway.accept()
    assert token_tenant == "*"
    assert subscribe["tenant"] == tenant
    await connection.send(state_frame(tenant, 1, "5.00", kind="snapshot"))
    await page.wait_for("document.getElementById('kpi-ar').dataset.value === '5.00'", "AR")
    assert await page.evaluate("document.getElementById('tenant').dataset.tenant") == tenant

    # Not a JWT at all: refused by the page itself, nothing opened.
    second = await browser.new_page()
    await second.goto(f"{api}/?token=not-a-token")
    await second.wait_for("!document.getElementById('sign-in').hidden", "the sign-in form")
    assert "not a ledger token" in await second.evaluate(
        "document.getElementById('sign-in-message').textContent"
    )
    assert second.sockets == []

    # Signed with another secret: the (scripted) gateway closes with 4401, once.
    refused_before = gateway.refused
    third = await browser.new_page()
    await third.goto(f"{api}/?token={issue_token('another-secret-long-enough-for-hs256', 'x')}")
    await third.wait_for(
        "document.getElementById('connection').dataset.state === 'unauthorized'", "4401"
    )
    await asyncio.sleep(no_reconnect_watch_s)
    assert gateway.refused == refused_before + 1
    assert len(third.sockets) == 1


formatting_cases = [
    ("formatMoney('1234567.50', 'USD')", "$1,234,567.50"),
    ("formatMoney('-300.00', 'USD')", "-$300.00"),
    ("formatMoney('0.00', 'EUR')", "€0.00"),
    ("formatMoney('1000', 'JPY')", "¥1,000"),
    ("formatMoney('12.50', 'CHF')", "CHF\u00a012.50"),
    ("formatMoney('12.50', null)", "12.50"),
    ("formatMoney(null, 'USD')", "—"),
    ("formatPercent('0.25')", "25 %"),
    ("formatPercent('0.253')", "25.3 %"),
    ("formatPercent('-0.5')", "-50 %"),
    ("formatPercent('12')", "1,200 %"),
    ("formatDays('1234.5')", "1,234.5 days"),
    ("formatCount(12345)", "12,345"),
    # Sums are exact where binary floating point is not (0.1 + 0.2 = 0.30000000000000004).
    ("addDecimals(['0.1', '0.2'])", "0.3"),
    ("addDecimals(['99999999999999999.99', '0.01'])", "100000000000000000.00"),
    ("addDecimals(['100.00', '-100.005'])", "-0.005"),
    ("negateDecimal('0.50')", "-0.50"),
]


async def test_figures_are_formatted_from_their_decimal_strings_exactly(
    scripted: tuple[ScriptedGateway, str, PostgresEventStore], browser: Browser
) -> None:
    _, api, _ = scripted
    page = await browser.new_page()
    await page.goto(f"{api}/")
    calls = ", ".join(f"[{call!r}, format.{call}]" for call, _ in formatting_cases)
    results = await page.evaluate(
        f"import('/dashboard/format.js').then((format) => Object.fromEntries([{calls}]))"
    )
    assert results == dict(formatting_cases)
