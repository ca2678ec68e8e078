"""The published JSON Schemas in `schemas/` agree with the pydantic contract.

It proves that the committed files are exactly what `python -m ledger.schemas` generates from the
models today (regenerated into a temporary folder and compared byte for byte, so a model change
without a regeneration fails here), that `--check` names drifted, missing and extra files, and that
the schemas and `parse_event` agree: a valid example of every type passes its schema file under the
`jsonschema` validator (draft 2020-12, with format checks), and invalid events are refused by both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from ledger import schemas
from ledger.contract import ProposedEvent, id_length_max, lines_count_max, parse_event, type_name
from ledger.errors import RejectionCode
from tests.ledger.contract_examples import event, example_event, examples
from tests.ledger.test_contract import DELETE, journal, with_data, with_envelope

repository = Path(__file__).resolve().parents[2]
schemas_directory = repository / "schemas"


def schema_file(kind: str) -> Path:
    return schemas_directory / f"{type_name(kind)}.json"


def validator(kind: str) -> Draft202012Validator:
    schema = json.loads(schema_file(kind).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


# --- the files match the models --------------------------------------------------------------


def test_committed_schemas_are_byte_for_byte_what_the_models_generate(tmp_path: Path) -> None:
    schemas.write(tmp_path)
    generated = {path.name: path.read_bytes() for path in tmp_path.glob("*.json")}
    committed = {path.name: path.read_bytes() for path in schemas_directory.glob("*.json")}
    assert len(generated) == len(examples) == 14
    assert sorted(committed) == sorted(generated), "run: python -m ledger.schemas"
    for name, text in generated.items():
        assert committed[name] == text, f"{name} drifted; run: python -m ledger.schemas"


def test_check_passes_on_the_committed_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert schemas.main(["--check", str(schemas_directory)]) == 0
    assert capsys.readouterr().err == ""


def test_check_names_each_drifted_missing_and_extra_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas.write(tmp_path)
    (tmp_path / "README.md").write_text("kept\n", encoding="utf-8")
    changed = tmp_path / "ledger.invoice.issued.v1.json"
    changed.write_text(changed.read_text(encoding="utf-8").replace('"total"', '"sum"'))
    (tmp_path / "ledger.expense.paid.v1.json").unlink()
    (tmp_path / "ledger.invoice.paid.v0.json").write_text("{}\n", encoding="utf-8")

    assert schemas.main(["--check", str(tmp_path)]) == 1
    problems = capsys.readouterr().err.splitlines()
    assert f"{tmp_path}: extra: ledger.invoice.paid.v0.json" in problems
    assert f"{tmp_path}: missing: ledger.expense.paid.v1.json" in problems
    assert f"{tmp_path}: differs: ledger.invoice.issued.v1.json" in problems
    assert len([line for line in problems if line.startswith(str(tmp_path))]) == 3

    assert schemas.main([str(tmp_path)]) == 0
    assert schemas.main(["--check", str(tmp_path)]) == 0
    assert not (tmp_path / "ledger.invoice.paid.v0.json").exists()
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "kept\n"


def test_files_are_pretty_printed_with_sorted_keys_and_a_final_newline() -> None:
    text = schema_file("invoice.issued").read_text(encoding="utf-8")
    schema = json.loads(text)
    assert text == json.dumps(schema, indent=2, sort_keys=True) + "\n"
    assert schema["properties"]["type"]["const"] == "ledger.invoice.issued.v1"


def test_default_directory_is_the_repository_schemas_folder() -> None:
    assert schemas.default_directory(repository / "tests" / "ledger") == schemas_directory
    assert schemas.default_directory(repository) == schemas_directory


def test_runs_as_a_program(tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(repository / "src")}
    command = [sys.executable, "-m", "ledger.schemas", "--check"]
    # From a subfolder, to exercise the search for the repository root. (Not from tests/: with
    # `-m` the current directory comes first on sys.path, and tests/ledger would shadow ledger.)
    from_subfolder = subprocess.run(
        command, cwd=schemas_directory, env=environment, capture_output=True, text=True
    )
    assert from_subfolder.returncode == 0, from_subfolder.stderr
    empty = subprocess.run(
        [*command, str(tmp_path)], env=environment, capture_output=True, text=True
    )
    assert empty.returncode == 1
    assert f"{tmp_path}: missing: ledger.journal.posted.v1.json" in empty.stderr.splitlines()


# --- the schemas and parse_event agree -------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(examples))
def test_each_file_is_a_valid_draft_2020_12_schema(kind: str) -> None:
    Draft202012Validator.check_schema(json.loads(schema_file(kind).read_text(encoding="utf-8")))


@pytest.mark.parametrize("kind", sorted(examples))
def test_valid_example_passes_its_schema(kind: str) -> None:
    raw = example_event(kind)
    validator(kind).validate(raw)
    # The stored (normalised) form is a valid event too.
    validator(kind).validate(event(kind, examples[kind].normalised))
    assert isinstance(parse_event(raw), ProposedEvent)


@pytest.mark.parametrize("kind", sorted(examples))
def test_an_event_fails_the_schema_of_every_other_type(kind: str) -> None:
    raw = example_event(kind)
    for other in examples:
        if other != kind:
            assert not validator(other).is_valid(raw), f"{kind} passes {other}'s schema"


C = RejectionCode
_long_id = "x" * (id_length_max + 1)

refused_by_both = [
    pytest.param("invoice.written_off", with_data("invoice.written_off", (("amount",), 10)),
                 C.invalid_amount, id="money-int"),
    pytest.param("invoice.written_off", with_data("invoice.written_off", (("amount",), 10.5)),
                 C.invalid_amount, id="money-float"),
    pytest.param("invoice.written_off", with_data("invoice.written_off", (("amount",), "-10")),
                 C.negative_amount, id="money-negative"),
    pytest.param("invoice.written_off", with_data("invoice.written_off", (("amount",), "1e3")),
                 C.invalid_amount, id="money-exponent"),
    pytest.param("invoice.written_off", with_data("invoice.written_off", (("amount",), "NaN")),
                 C.invalid_amount, id="money-nan"),
    pytest.param("invoice.written_off", with_data("invoice.written_off", (("amount",), " 10")),
                 C.invalid_amount, id="money-space"),
    pytest.param("invoice.written_off",
                 with_data("invoice.written_off", (("amount",), "10.12345")),
                 C.amount_too_many_digits, id="money-5-digits"),
    pytest.param("invoice.issued", with_data("invoice.issued", (("lines", 0, "amount"), 100)),
                 C.invalid_amount, id="line-money-int"),
    pytest.param("invoice.written_off", with_data("invoice.written_off", (("currency",), "usd")),
                 C.unknown_currency, id="currency-lowercase"),
    pytest.param("invoice.issued", with_data("invoice.issued", (("colour",), "red")),
                 C.unknown_field, id="payload-unknown-field"),
    pytest.param("contract.signed", with_data("contract.signed", (("lines", 0, "colour"), "red")),
                 C.unknown_field, id="line-unknown-field"),
    pytest.param("invoice.issued", with_envelope("invoice.issued", colour="red"),
                 C.unknown_field, id="envelope-unknown-attribute"),
    pytest.param("invoice.issued", with_data("invoice.issued", (("total",), DELETE)),
                 C.missing_field, id="payload-missing-field"),
    pytest.param("invoice.issued", with_data("invoice.issued", (("lines", 0, "amount"), DELETE)),
                 C.missing_field, id="line-missing-field"),
    pytest.param("invoice.issued", with_envelope("invoice.issued", tenantid=DELETE),
                 C.missing_field, id="envelope-missing-attribute"),
    pytest.param("invoice.issued", with_envelope("invoice.issued", specversion="0.3"),
                 C.invalid_specversion, id="specversion"),
    pytest.param("invoice.issued", with_envelope("invoice.issued", tenantid="-acme"),
                 C.invalid_tenant, id="tenant"),
    pytest.param("invoice.issued", with_data("invoice.issued", (("issue_date",), "2026-02-30")),
                 C.invalid_date, id="impossible-date"),
    pytest.param("invoice.issued", with_data("invoice.issued", (("issue_date",), "15/01/2026")),
                 C.invalid_date, id="non-iso-date"),
    pytest.param("invoice.issued", with_envelope("invoice.issued", id=_long_id),
                 C.field_too_long, id="id-too-long"),
    pytest.param("invoice.issued", with_data("invoice.issued", (("invoice_id",), _long_id)),
                 C.field_too_long, id="payload-id-too-long"),
    pytest.param("journal.posted",
                 journal(*[{"account": "cash", "debit": "0"}] * (lines_count_max + 1)),
                 C.too_many_items, id="too-many-lines"),
    pytest.param("invoice.issued", with_data("invoice.issued", (("lines",), [])),
                 C.invalid_value, id="no-lines"),
    pytest.param("contract.signed",
                 with_data("contract.signed", (("lines", 0, "recognition"), "monthly")),
                 C.invalid_value, id="recognition"),
    pytest.param("invoice.issued", with_envelope("invoice.issued", expectedversion=-1),
                 C.invalid_value, id="expectedversion-negative"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "raw", "code"), refused_by_both)
def test_invalid_event_is_refused_by_schema_and_parse_event(
    kind: str, raw: dict[str, Any], code: RejectionCode
) -> None:
    assert not validator(kind).is_valid(raw)
    result = parse_event(raw)
    assert isinstance(result, list)
    assert [rejection.code for rejection in result] == [code]


@pytest.mark.parametrize(
    ("kind", "raw", "code"),
    [
        pytest.param(
            "invoice.issued",
            with_data("invoice.issued", (("total",), "1.00")),
            C.total_mismatch,
            id="total",
        ),
        pytest.param(
            "contract.signed",
            with_data("contract.signed", (("end_date",), "2126-01-02")),
            C.contract_term_too_long,
            id="term",
        ),
        pytest.param(
            "invoice.written_off",
            with_data("invoice.written_off", (("amount",), "10.001")),
            C.amount_too_many_digits,
            id="usd-3-digits",
        ),
        pytest.param(
            "journal.posted",
            journal({"account": "cash", "debit": "5"}, {"account": "eq", "credit": "4"}),
            C.journal_unbalanced,
            id="unbalanced",
        ),
    ],
)
def test_rules_across_fields_are_the_ledgers_not_the_schemas(
    kind: str, raw: dict[str, Any], code: RejectionCode
) -> None:
    # A schema cannot compare fields (a total with its lines, an amount with its currency), so
    # these pass the schema; the ledger still refuses them, as schemas/README.md says.
    assert validator(kind).is_valid(raw)
    result = parse_event(raw)
    assert isinstance(result, list)
    assert [rejection.code for rejection in result] == [code]
