"""The HTTP API serves the dashboard: `/` is its page, `/dashboard/{name}` its files with their
content types (only files of that folder, whatever the name tries), and `/v1/dashboard/config` the
gateway's URL, or a 404 that says why when the API runs without a gateway. Checked through
aiohttp's test client over the in-memory store; these routes need no token even when the API
requires one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ledger.api import dashboard_files, make_app
from ledger.embedded import free_loopback_port
from ledger.service import LedgerService
from ledger.store.memory import MemoryEventStore
from tests.ledger.test_cli import src_dir

gateway_url = "ws://127.0.0.1:8765/v1/stream"
Client = TestClient[Any, Any]


@pytest.fixture
def client_for() -> Callable[..., AbstractAsyncContextManager[Client]]:
    @asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[Client]:
        app = make_app(LedgerService(MemoryEventStore()), **options)
        async with TestClient(TestServer(app)) as client:
            yield client

    return make


async def test_the_page_and_its_files_are_served_with_their_content_types(
    client_for: Callable[..., AbstractAsyncContextManager[Client]],
) -> None:
    async with client_for(jwt_secret="a-secret", gateway_url=gateway_url) as client:
        page = await client.get("/")
        assert page.status == 200
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        html = await page.text()
        assert '<script type="module" src="/dashboard/dashboard.js">' in html
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff"

        for name, content_type in [
            ("dashboard.js", "text/javascript; charset=utf-8"),
            ("charts.js", "text/javascript; charset=utf-8"),
            ("format.js", "text/javascript; charset=utf-8"),
            ("dashboard.css", "text/css; charset=utf-8"),
            ("index.html", "text/html; charset=utf-8"),
        ]:
            response = await client.get(f"/dashboard/{name}")
            assert response.status == 200, name
            assert response.headers["Content-Type"] == content_type
            assert await response.read() == dashboard_files()[name].body

        # Unchanged since the last visit: a 304 without a body.
        etag = page.headers["ETag"]
        again = await client.get("/", headers={"If-None-Match": etag})
        assert again.status == 304
        assert await again.read() == b""


async def test_the_page_needs_no_chart_library_from_elsewhere() -> None:
    for name, file in dashboard_files().items():
        text = file.body.decode()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), name
        assert "https://" not in text, name


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/missing.js",
        "/dashboard/..%2Fapi.py",
        "/dashboard/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/dashboard/../../ledger/api.py",
        "/dashboard/__init__.py",
        "/dashboard/.hidden.js",
        "/dashboard/",
        "/dashboard/dashboard.js/",
        "/dashboard//etc/passwd",
    ],
)
async def test_nothing_outside_the_dashboard_folder_is_served(
    client_for: Callable[..., AbstractAsyncContextManager[Client]], path: str
) -> None:
    async with client_for() as client:
        response = await client.get(path)
        assert response.status == 404, path
        body = await response.read()
        assert b"import " not in body and b"[project]" not in body


async def test_config_names_the_gateway_or_says_there_is_none(
    client_for: Callable[..., AbstractAsyncContextManager[Client]],
) -> None:
    async with client_for(jwt_secret="a-secret", gateway_url=gateway_url) as client:
        response = await client.get("/v1/dashboard/config")
        assert response.status == 200
        assert orjson.loads(await response.read()) == {"gateway_url": gateway_url}

    async with client_for() as client:
        response = await client.get("/v1/dashboard/config")
        assert response.status == 404
        error = orjson.loads(await response.read())["error"]
        assert error["code"] == "no_gateway"
        assert "gateway" in error["message"]


async def test_reports_still_need_the_token_the_page_sends(
    client_for: Callable[..., AbstractAsyncContextManager[Client]],
) -> None:
    async with client_for(jwt_secret="a-secret", gateway_url=gateway_url) as client:
        response = await client.get("/v1/reports/kpi?tenant=acme&as_of=2026-01-31")
        assert response.status == 401


def test_ledger_api_gives_the_dashboard_the_configured_gateway(database_url: str) -> None:
    """`ledger api` run on its own (production: API and gateway are separate processes) tells the
    dashboard where the gateway is, from --gateway-url or LEDGER_GATEWAY_URL."""

    port = free_loopback_port()
    gateway_url = "wss://gateway.example/v1/stream"
    environment = dict(
        os.environ,
        LEDGER_DATABASE_URL=database_url,
        LEDGER_GATEWAY_URL=gateway_url,
        PYTHONPATH=str(src_dir),
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "api", "--port", str(port)], env=environment
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                url = f"http://127.0.0.1:{port}/v1/dashboard/config"
                with urllib.request.urlopen(url, timeout=2) as response:
                    assert orjson.loads(response.read()) == {"gateway_url": gateway_url}
                break
            except OSError:
                assert time.monotonic() < deadline, "ledger api did not start"
                time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0
