"""With LEDGER_JWT_SECRET configured the HTTP API takes only bearer JWTs (HS256, expiry checked):
no token, a forged one or an expired one is refused with 401; a token may only write or read its
own tenant (403 otherwise, nothing appended); `*` acts for all; `ledger token` issues valid tokens."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ledger.api import make_app
from ledger.auth import issue_token, tenant_of
from ledger.service import LedgerService
from ledger.store.memory import MemoryEventStore
from tests.ledger.events import customer, new_tenant

secret = "test-secret-0123456789abcdef0123456789"
src_dir = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(
        TestServer(make_app(LedgerService(MemoryEventStore()), secret))
    ) as test_client:
        yield test_client


async def _post(client: TestClient[Any, Any], body: Any, token: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = await client.post("/v1/events", data=orjson.dumps(body), headers=headers)
    return response.status, orjson.loads(await response.read())


async def test_tokens_are_required_and_checked(client: TestClient[Any, Any]) -> None:
    tenant = new_tenant()
    expired = jwt.encode(
        {"tenant": tenant, "exp": int(time.time()) - 3600}, secret, algorithm="HS256"
    )
    forged = issue_token("another-secret-0123456789abcdef01234", tenant)
    for token, reason in (
        (None, "Bearer"),
        (forged, "not valid"),
        (expired, "expired"),
        ("junk", "not valid"),
    ):
        status, answer = await _post(client, customer(tenant), token)
        assert status == 401, token
        assert answer["error"]["code"] == "unauthorized" and reason in answer["error"]["message"]
    status, answer = await _post(client, customer(tenant), issue_token(secret, tenant))
    assert status == 200 and len(answer["appended"]) == 1


async def test_a_token_acts_only_for_its_tenant(client: TestClient[Any, Any]) -> None:
    mine, theirs = new_tenant(), new_tenant()
    token = issue_token(secret, mine)
    status, answer = await _post(client, [customer(mine), customer(theirs)], token)
    assert status == 403 and answer["error"]["code"] == "tenant_not_allowed"
    response = await client.get(
        "/v1/events", params={"tenant": theirs}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 403
    response = await client.get(
        "/v1/events", params={"tenant": mine}, headers={"Authorization": f"Bearer {token}"}
    )
    assert (await response.json())["events"] == []  # the refused batch appended nothing
    status, _ = await _post(client, [customer(mine), customer(theirs)], issue_token(secret, "*"))
    assert status == 200


def test_ledger_token_prints_a_valid_token() -> None:
    environment = dict(os.environ, LEDGER_JWT_SECRET=secret)
    environment["PYTHONPATH"] = os.pathsep.join([str(src_dir), environment.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "token", "--tenant", "acme", "--ttl-s", "60"],
        env=environment,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert tenant_of(secret, f"Bearer {result.stdout.decode().strip()}") == "acme"


def test_ledger_token_uses_the_secret_ledger_up_keeps(tmp_path: Path) -> None:
    """Without LEDGER_JWT_SECRET, `ledger token` signs with the secret `ledger up` made for the
    data folder (so more dashboard tokens can be had), and says what to set when there is none."""
    environment = {k: v for k, v in os.environ.items() if k != "LEDGER_JWT_SECRET"}
    environment["PYTHONPATH"] = os.pathsep.join([str(src_dir), environment.get("PYTHONPATH", "")])
    environment["LEDGER_DATA_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "ledger.cli", "token", "--tenant", "acme"]

    def run() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            command, env=environment, capture_output=True, check=False, timeout=60
        )

    missing = run()
    assert missing.returncode == 2 and b"LEDGER_JWT_SECRET" in missing.stderr
    kept = "a-secret-ledger-up-made-of-at-least-32-bytes"
    (tmp_path / "jwt-secret").write_text(kept + "\n")
    made = run()
    assert made.returncode == 0, made.stderr
    assert tenant_of(kept, f"Bearer {made.stdout.decode().strip()}") == "acme"


def test_a_verified_token_is_remembered_but_its_expiry_is_checked_on_every_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ledger import auth

    tenant = new_tenant()
    token = issue_token(secret, tenant, ttl_s=60)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert tenant_of(secret, f"Bearer {token}") == tenant
    assert (secret, token) in auth._verified
    # Remembered per secret and whole token: the same claims signed otherwise, or the same token
    # checked with another secret, are refused.
    forged = token.rsplit(".", 1)[0] + "." + "A" * 43
    for other_secret, other_token in (
        (secret, forged),
        ("other-secret-0123456789abcdef0123", token),
    ):
        with pytest.raises(auth.AuthError, match="not valid"):
            tenant_of(other_secret, f"Bearer {other_token}")
    # Still valid within the leeway after exp, expired once past it, though it verified before.
    monkeypatch.setattr(auth, "_clock", lambda: exp + auth.leeway_s - 1)
    assert tenant_of(secret, f"Bearer {token}") == tenant
    monkeypatch.setattr(auth, "_clock", lambda: exp + auth.leeway_s)
    with pytest.raises(auth.AuthError, match="expired"):
        tenant_of(secret, f"Bearer {token}")
    assert (secret, token) not in auth._verified


def test_the_verified_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger import auth

    monkeypatch.setattr(auth, "verified_tokens_max", 3)
    monkeypatch.setattr(auth, "_verified", {})
    tokens = [issue_token(secret, new_tenant()) for _ in range(7)]
    for token in tokens:
        tenant_of(secret, f"Bearer {token}")
        assert len(auth._verified) <= 3
    assert (secret, tokens[-1]) in auth._verified
