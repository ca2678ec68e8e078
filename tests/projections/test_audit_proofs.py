"""Merkle tree heads and proofs of the audit chain (`projections.audit_proofs`) against the real
database: the root is the RFC 9162 root of the chain recomputed from the store; every event's
inclusion proof checks offline from the event itself; a head kept earlier is extended by a
consistency proof; a row changed behind the ledger's back makes its proof fail; the CLI and HTTP
give the same answers and refuse bad requests naming the field."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from psycopg import AsyncConnection

from ledger.api import make_app
from ledger.auth import issue_token
from ledger.service import LedgerService
from ledger.signed_note import Signer, Verifier
from ledger.store.postgres import PostgresEventStore
from projections import audit_proofs, merkle
from projections.audit_chain import chain_hash, genesis_hash
from projections.core import ProjectedEvent
from tests.ledger.events import customer, invoice
from tests.projections.test_audit_chain import (
    change_row,
    jwt_secret,
    ledger_cli,
    positions_of,
    seed,
)

# Every test on a database of its own (`store` in tests/conftest.py): they read every tenant
# of the store or change the database.
own_database = True


async def _root_from_the_store(store: PostgresEventStore, tenant: str, size: int) -> str:
    """The RFC 9162 root over the chain recomputed from the stored events, not from its links."""
    link, leaves = genesis_hash, []
    for event in (await store.read(tenant, 1, 10_000))[:size]:
        link = chain_hash(link, ProjectedEvent.from_recorded(event))
        leaves.append(merkle.leaf_hash(bytes.fromhex(link)))
    return merkle.Tree(leaves).root().hex()


async def test_every_event_is_proved_in_the_tree_and_a_kept_head_is_extended(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, other = await seed(store)
    positions = await positions_of(store, tenant)
    # Nothing projected yet: the answer catches the chain up first.
    kept = await audit_proofs.tree_head(store, conn, tenant)
    assert kept["tree_size"] == len(positions) and kept["position"] == positions[-1]
    assert kept["root_hash"] == await _root_from_the_store(store, tenant, len(positions))
    for index, position in enumerate(positions):
        proof = await audit_proofs.inclusion(store, conn, tenant, position)
        assert proof["leaf_index"] == index and proof["tree_size"] == len(positions)
        assert audit_proofs.check(proof, kept["root_hash"]) == {
            "ok": True,
            "kind": "inclusion",
            "reason": "",
        }
        assert len(proof["audit_path"]) <= len(positions).bit_length()

    # More events: today's tree extends the kept one, and the old head can be asked for again.
    report = await LedgerService(store).append(
        [customer(tenant, "C-LATE"), invoice(tenant, "INV-LATE", customer_id="C-LATE")]
    )
    assert not report.rejected
    today = await audit_proofs.tree_head(store, conn, tenant)
    assert today["tree_size"] == len(positions) + 2
    assert await audit_proofs.tree_head(store, conn, tenant, kept["tree_size"]) == kept
    proof = await audit_proofs.consistency(store, conn, tenant, kept["tree_size"])
    assert (proof["first_root"], proof["second_root"]) == (kept["root_hash"], today["root_hash"])
    assert audit_proofs.check(proof, kept["root_hash"])["ok"]
    # An old event is in today's tree too (in a proof against today's head).
    old = await audit_proofs.inclusion(store, conn, tenant, positions[3])
    assert old["root_hash"] == today["root_hash"] and audit_proofs.check(old)["ok"]
    # The other tenant's chain is a tree of its own.
    assert (await audit_proofs.tree_head(store, conn, other))["root_hash"] not in (
        kept["root_hash"],
        today["root_hash"],
    )


async def test_a_proof_does_not_hold_for_anything_changed(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, _ = await seed(store)
    positions = await positions_of(store, tenant)
    head = await audit_proofs.tree_head(store, conn, tenant)
    proof = await audit_proofs.inclusion(store, conn, tenant, positions[1])

    changed = copy.deepcopy(proof)
    changed["event"]["data"]["name"] = "Mallory Ltd"
    assert audit_proofs.check(changed) == {
        "ok": False,
        "kind": "inclusion",
        "reason": "the event and the path do not lead to the root",
    }
    moved = copy.deepcopy(proof)
    moved["position"] = positions[2]
    assert not audit_proofs.check(moved)["ok"]
    assert audit_proofs.check(proof, "0" * 64)["reason"] == (
        "the proof's root is not the trusted root"
    )
    consistency = await audit_proofs.consistency(store, conn, tenant, 3)
    assert audit_proofs.check(consistency, "0" * 64)["reason"] == (
        "the proof's first root is not the trusted root"
    )
    assert audit_proofs.check({"audit_path": []})["reason"].startswith("not a proof answer")
    assert audit_proofs.check({"x": 1})["reason"] == (
        "neither an inclusion nor a consistency proof, nor a signed tree head"
    )

    # A row changed behind the ledger's back: the ledger still serves its stored chain's root,
    # but the event it now holds at that position no longer leads there.
    tampered = change_row(store, positions)
    served = await audit_proofs.inclusion(store, conn, tenant, tampered)
    assert served["root_hash"] == head["root_hash"]
    assert served["event"]["data"]["name"] == "Mallory Ltd"
    assert not audit_proofs.check(served, head["root_hash"])["ok"]


async def test_requests_outside_the_tree_are_refused_naming_the_field(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, other = await seed(store)
    size = len(await positions_of(store, tenant))
    other_position = (await positions_of(store, other))[0]
    cases: list[tuple[Any, str, str]] = [
        (audit_proofs.tree_head(store, conn, tenant, size + 1), "size", f"from 0 to {size}"),
        (audit_proofs.inclusion(store, conn, tenant, other_position), "position", "no event"),
        (audit_proofs.inclusion(store, conn, tenant, 10**9), "position", "no event"),
        (
            audit_proofs.inclusion(store, conn, tenant, (await positions_of(store, tenant))[-1], 2),
            "size",
            "after a tree of 2",
        ),
        (audit_proofs.consistency(store, conn, tenant, size + 1), "first", f"from 0 to {size}"),
        (audit_proofs.consistency(store, conn, tenant, 3, 2), "first", "from 0 to 2"),
        (audit_proofs.consistency(store, conn, tenant, 1, size + 5), "second", "from 0 to"),
    ]
    for call, field, reason in cases:
        with pytest.raises(audit_proofs.ProofError) as refused:
            await call
        assert refused.value.field == field and reason in refused.value.reason
    empty = await audit_proofs.consistency(store, conn, tenant, 0)
    assert empty["proof"] == [] and empty["first_root"] == merkle.empty_root.hex()
    assert audit_proofs.check(empty)["ok"]


async def test_the_cli_proves_and_checks(store: PostgresEventStore, tmp_path: Any) -> None:
    tenant, _ = await seed(store)
    positions = await positions_of(store, tenant)
    url = store.conninfo
    head = ledger_cli(url, "audit", "tree-head", "--tenant", tenant, "--size", "4")
    assert head.returncode == 0, head.stderr
    kept = orjson.loads(head.stdout)
    assert kept["tree_size"] == 4

    proved = ledger_cli(
        url, "audit", "prove", "--tenant", tenant, "--position", str(positions[2]), "--size", "4"
    )
    assert proved.returncode == 0, proved.stderr
    (tmp_path / "proof.json").write_bytes(proved.stdout)
    checked = ledger_cli(
        url, "audit", "check", str(tmp_path / "proof.json"), "--trusted-root", kept["root_hash"]
    )
    assert checked.returncode == 0, checked.stderr
    assert orjson.loads(checked.stdout) == {"ok": True, "kind": "inclusion", "reason": ""}

    extended = ledger_cli(url, "audit", "consistency", "--tenant", tenant, "--first", "4")
    assert extended.returncode == 0, extended.stderr
    (tmp_path / "consistency.json").write_bytes(extended.stdout)
    checked = ledger_cli(url, "audit", "check", str(tmp_path / "consistency.json"))
    assert checked.returncode == 0 and orjson.loads(checked.stdout)["kind"] == "consistency"

    forged = orjson.loads(proved.stdout)
    forged["event"]["type"] = "ledger.customer.deleted.v1"
    (tmp_path / "forged.json").write_bytes(orjson.dumps(forged))
    refused = ledger_cli(url, "audit", "check", str(tmp_path / "forged.json"))
    assert refused.returncode == 2 and not orjson.loads(refused.stdout)["ok"]

    for args, message in [
        (["prove", "--tenant", tenant, "--position", "999999"], b"--position: no event"),
        (["tree-head", "--tenant", tenant, "--size", "-1"], b"--size must be a whole number"),
        (["consistency", "--tenant", tenant, "--first", "999"], b"--first: must be from 0 to"),
        (["tree-head", "--tenant", "not a tenant"], b"--tenant 'not a tenant' is not a valid"),
        (["check", str(tmp_path / "missing.json")], b"audit check: "),
        (["check", str(tmp_path / "proof.json"), "--trusted-root", "xyz"], b"--trusted-root"),
    ]:
        result = ledger_cli(url, "audit", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and b"Traceback" not in result.stderr, result.stderr


async def test_http_serves_the_same_proofs_for_the_token_tenant(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, other = await seed(store)
    positions = await positions_of(store, tenant)
    mine = {"Authorization": f"Bearer {issue_token(jwt_secret, tenant)}"}
    async with TestClient(TestServer(make_app(LedgerService(store), jwt_secret))) as client:

        async def get(path: str, **params: Any) -> tuple[int, Any]:
            response = await client.get(path, params=params, headers=mine)
            return response.status, await response.json()

        status, head = await get("/v1/audit/tree-head", tenant=tenant)
        assert status == 200 and head == await audit_proofs.tree_head(store, conn, tenant)
        status, proof = await get("/v1/audit/inclusion", tenant=tenant, position=positions[5])
        assert status == 200 and audit_proofs.check(proof, head["root_hash"])["ok"]
        status, proof = await get("/v1/audit/consistency", tenant=tenant, first=2, second=6)
        assert status == 200 and proof["second_size"] == 6
        assert audit_proofs.check(proof)["ok"]

        for path, params, field in [
            ("/v1/audit/inclusion", {"tenant": tenant}, "position"),
            ("/v1/audit/inclusion", {"tenant": tenant, "position": "x"}, "position"),
            ("/v1/audit/inclusion", {"tenant": tenant, "position": "999999"}, "position"),
            ("/v1/audit/tree-head", {"tenant": tenant, "size": "999"}, "size"),
            ("/v1/audit/consistency", {"tenant": tenant}, "first"),
        ]:
            status, answer = await get(path, **params)
            assert status == 400 and answer["error"]["field"] == field, (path, params, answer)
        response = await client.get("/v1/audit/tree-head", params={"tenant": other}, headers=mine)
        assert response.status == 403


async def test_a_signed_tree_head_checks_with_the_verifier_key_only(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, other = await seed(store)
    signer = Signer.generate("ledger.example.com")
    verifier = Verifier.parse(str(signer.verifier))
    head = await audit_proofs.tree_head(store, conn, tenant, 5, signer)
    assert head["verifier_key"] == str(signer.verifier)
    assert head["checkpoint"].startswith(f"ledger.example.com/{tenant}\n5\n")
    assert audit_proofs.check(head, verifier=verifier) == {
        "ok": True,
        "kind": "checkpoint",
        "reason": "",
    }
    unsigned = await audit_proofs.tree_head(store, conn, tenant, 5)
    assert "checkpoint" not in unsigned and unsigned["root_hash"] == head["root_hash"]

    def reason(answer: dict[str, Any], key: Verifier | None = verifier) -> str:
        verdict = audit_proofs.check(answer, verifier=key)
        assert not verdict["ok"]
        return str(verdict["reason"])

    assert reason({**head, "root_hash": "0" * 64}) == "the checkpoint signs another size or root"
    assert reason({**head, "tree_size": 6}) == "the checkpoint signs another size or root"
    assert reason({**head, "tenant": other}).startswith("the checkpoint is of another log")
    stranger = Verifier.parse(str(Signer.generate("ledger.example.com").verifier))
    assert reason(head, stranger).startswith("the note has no signature by ledger.example.com+")
    assert reason(head, None) == "a signed tree head is checked with a verifier key"

    # HTTP signs with the key the API was given.
    mine = {"Authorization": f"Bearer {issue_token(jwt_secret, tenant)}"}
    app = make_app(LedgerService(store), jwt_secret, audit_signer=signer)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/audit/tree-head", params={"tenant": tenant}, headers=mine)
        assert response.status == 200
        assert audit_proofs.check(await response.json(), verifier=verifier)["ok"]


async def test_the_cli_makes_a_key_and_signs_with_it(
    store: PostgresEventStore, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, _ = await seed(store)
    made = ledger_cli(store.conninfo, "audit", "keygen", "--name", "ledger.example.com")
    assert made.returncode == 0, made.stderr
    keys = orjson.loads(made.stdout)
    monkeypatch.setenv("LEDGER_AUDIT_SIGNING_KEY", keys["signer_key"])
    head = ledger_cli(store.conninfo, "audit", "tree-head", "--tenant", tenant)
    assert head.returncode == 0, head.stderr
    (tmp_path / "head.json").write_bytes(head.stdout)
    checked = ledger_cli(
        store.conninfo,
        "audit",
        "check",
        str(tmp_path / "head.json"),
        "--verifier-key",
        keys["verifier_key"],
    )
    assert checked.returncode == 0, checked.stdout
    assert orjson.loads(checked.stdout)["kind"] == "checkpoint"
    unverified = ledger_cli(store.conninfo, "audit", "check", str(tmp_path / "head.json"))
    assert unverified.returncode == 2

    for args, message in [
        (["check", str(tmp_path / "head.json"), "--verifier-key", "nope"], b"--verifier-key: not"),
        (["keygen", "--name", "two words"], b"--name: a key name is non-empty"),
    ]:
        refused = ledger_cli(store.conninfo, "audit", *args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    monkeypatch.setenv("LEDGER_AUDIT_SIGNING_KEY", "PRIVATE+KEY+oops")
    refused = ledger_cli(store.conninfo, "audit", "tree-head", "--tenant", tenant)
    assert refused.returncode == 2
    assert refused.stderr.decode().startswith(
        "ledger: configuration: LEDGER_AUDIT_SIGNING_KEY: not a signer key"
    ), refused.stderr
    assert b"oops" not in refused.stderr  # a secret is never echoed
