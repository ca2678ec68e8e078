"""The README's examples are run here, so they cannot go stale: the batch in the curl example is
appended through the real service and store, and the answers the README shows are what comes back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore

readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _curl_batch() -> list[dict[str, Any]]:
    match = re.search(r"<<'JSON'\n(.*?)\nJSON\n", readme, re.DOTALL)
    assert match, "the README's curl example is missing"
    batch: list[dict[str, Any]] = orjson.loads(match.group(1))
    return batch


def _json_blocks() -> list[Any]:
    return [orjson.loads(block) for block in re.findall(r"```json\n(.*?)```", readme, re.DOTALL)]


def test_readme_starts_with_the_two_set_up_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert first_block and readme.index("```sh") < readme.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block.group(1).strip().splitlines()]
    assert commands == ["python3 dev.py up --demo", "python3 dev.py test"]


async def test_readme_batch_answers_as_documented(database_url: str) -> None:
    store = await PostgresEventStore.open(database_url)
    try:
        service = LedgerService(store)
        head = await store.head()
        batch = _curl_batch()
        # A fresh tenant per run, so the positions the README shows are relative to the head.
        tenant = f"readme{head}"
        for event in batch:
            event["tenantid"] = tenant
        report = await service.append(batch)
        documented_answer, documented_rejection = _json_blocks()
        assert [
            {key: entry[key] for key in ("id", "position", "stream_version")}
            for entry in report.appended
        ] == [
            dict(entry, position=entry["position"] + head)
            for entry in documented_answer["appended"]
        ]
        payment = (await store.read(tenant, head + 3, 1))[0]
        assert payment.metadata["ledger"] == {
            "allocation": "oldest_due_first",
            "allocations": [{"invoice_id": "INV-1001", "amount": "1200.00"}],
            "unapplied": "300.00",
        }
        again = await service.append(batch)
        assert [entry["id"] for entry in again.duplicates] == [event["id"] for event in batch]

        wrong_total = orjson.loads(orjson.dumps(batch[1]))
        wrong_total["id"] = "inv-1002"
        wrong_total["data"]["invoice_id"] = "INV-1002"
        wrong_total["data"]["total"] = "1300.00"
        rejected = await service.append([batch[0], wrong_total])
        assert rejected.appended == []
        assert rejected.rejected == documented_rejection["rejected"]
    finally:
        await store.close()


async def test_readme_reports_are_what_the_ledger_answers(database_url: str) -> None:
    from datetime import date

    from projections.reports import fresh_report, to_table

    store = await PostgresEventStore.open(database_url)
    try:
        tenant = f"readmereports{await store.head()}"
        batch = _curl_batch()
        for event in batch:
            event["tenantid"] = tenant
        assert not (await LedgerService(store).append(batch)).rejected
        examples = re.findall(
            r"```text\n\$ ledger report (\S+) --tenant acme --as-of (\S+) "
            r"--format table\n(.*?)```",
            readme,
            re.DOTALL,
        )
        assert len(examples) == 2
        async with store.connection() as conn:
            for kind, as_of, shown in examples:
                data = await fresh_report(store, conn, kind, tenant, date.fromisoformat(as_of))
                answer = to_table(kind, data).replace(tenant, "acme")
                assert [line.rstrip() for line in answer.splitlines()] == shown.splitlines()
    finally:
        await store.close()
