"""The public event contract: a CloudEvents 1.0 envelope around one payload per v1 type.

`parse_event` is the single stateless gate every entry point goes through (HTTP, Kafka ingest,
CLI, Python client). It checks, in this order: the envelope's shape, the type, the payload's shape,
money digits against the payload's currency, then the rules that need only the event itself (totals,
date order, balanced journals). It returns a `ProposedEvent` (normalised, with a content hash for
idempotency) or the `Rejection`s that name each bad field. Rules that need stored state (references,
over-application, the tenant's currency) live in `ledger.decide`.

Money travels as decimal strings and becomes `Decimal` here; a JSON number where money is expected is
refused, because a float has already lost the amount the publisher meant.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from ledger.compiled import Bail, Translation, compile_validator
from ledger.errors import Rejection, RejectionCode
from ledger.money import (
    MoneyDigitsError,
    MoneyFormatError,
    iso_4217_codes,
    minor_digits,
    parse_amount,
)

type_prefix = "ledger."
type_suffix = ".v1"

# Named limits. Ids are keys in indexes and URLs: 128 characters hold any UUID, ULID or
# "INV-2026-000001"-style number with room to spare. Free text (names, memos) is bounded so one event
# stays small; 1,000 lines covers the largest real invoices and contracts we know of.
id_length_max = 128
name_length_max = 500
memo_length_max = 2000
lines_count_max = 1000
source_length_max = 1024
# An event's content as canonical JSON (envelope and data) is at most this: each field's limit
# allows more together (1,000 lines of 500 characters of up to 4 bytes), and an event travels
# whole, in one Kafka message (`ledger.relay.message_bytes_max`, with room for the decisions).
event_bytes_max = 1024 * 1024

# The bound of each cache of parsed values (money, dates, times, padded amounts) by their text.
_parsed_cache_max = 4096


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Into one of those caches: emptied when full, so memory stays bounded."""
    if len(cache) >= _parsed_cache_max:
        cache.clear()
    cache[key] = value


_no_control_characters = r"^[^\x00-\x1f\x7f]+$"
# Free text may hold newlines and tabs, never NUL: PostgreSQL cannot store it in text or jsonb.
_no_nul = r"^[^\x00]*$"
_date_pattern = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# Two spellings of one rule: in a JSON Schema (ECMA-262) `$` is the end of the input, but in Python
# it also matches before a final "\n", so the compiled pattern ends in `\Z` for `.match` callers.
tenant_pattern_json = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
tenant_pattern = re.compile(tenant_pattern_json.removesuffix("$") + r"\Z")
# RFC 3339 `date-time`; `datetime.fromisoformat` alone also takes ISO 8601 forms RFC 3339 does not
# (week dates, "20260115T100000Z", no seconds, "+0200").
_rfc3339_pattern = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)

Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=id_length_max, pattern=_no_control_characters),
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=name_length_max, pattern=_no_nul)]
Memo = Annotated[str, StringConstraints(max_length=memo_length_max, pattern=_no_nul)]
Label = Annotated[
    str, StringConstraints(min_length=1, max_length=id_length_max, pattern=_no_control_characters)
]


# The business dates the ledger keeps: wide for any real book, and far from `date`'s own limits
# (years 1 and 9999), which the read models step past (the day before a change, the month ends
# after a contract's last day). A contract ending in 9999 was accepted and then broke every
# projection of its tenant.
date_min = date(1900, 1, 1)
date_max = date(2999, 12, 31)

# The longest contract term: its end_date at most 100 years after its start_date, beyond any
# commercial contract. Deferred revenue works out a changed line's schedule month by month over
# the term, so an amendment costs (lines x months): a 1,100-year term of 100 lines took the
# projector 7 s per amendment (1,000 lines: over a minute, the worker's partition stalled). A
# hundred years bounds it at a tenth of that.
contract_term_years_max = 100


def _years_after(day: date, years: int) -> date:
    """The same day `years` later; 29 February becomes the 28th in a year without one."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def _parse_date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        parsed = value
    elif not isinstance(value, str) or not _date_pattern.fullmatch(value):
        raise PydanticCustomError("invalid_date", "must be an ISO 8601 date such as 2026-01-31")
    else:
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "invalid_date", "is not a real calendar date (YYYY-MM-DD)"
            ) from None
    if not date_min <= parsed <= date_max:
        raise PydanticCustomError(
            "invalid_date", f"must be between {date_min} and {date_max} (the dates kept)"
        )
    return parsed


def _money_text(value: str | Decimal) -> str:
    """A money value as the contract's string: a Python caller's `Decimal` in fixed point, so the
    same checks (sign, digits, size) apply to it as to the JSON string it stands for."""
    return value if isinstance(value, str) else format(value, "f")


def _parse_money(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        value = _money_text(value)  # then checked as that string: "NaN" and "-5" are refused
    if isinstance(value, (bool, int | float)):
        raise PydanticCustomError(
            "invalid_amount", 'must be a decimal string such as "1200.00", not a JSON number'
        )
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_amount", 'must be a decimal string such as "1200.00"')
    try:
        # The widest minor unit of any currency is 4 digits; the payload's own currency is
        # checked against each amount once the whole payload has parsed (`_normalised_data`).
        return parse_amount(value, digits_max=4)
    except MoneyDigitsError as error:
        raise PydanticCustomError("amount_too_many_digits", str(error)) from None
    except MoneyFormatError as error:
        code = "negative_amount" if value.startswith("-") else "invalid_amount"
        raise PydanticCustomError(code, str(error)) from None


def _parse_currency(value: Any) -> str:
    if not isinstance(value, str) or value not in iso_4217_codes:
        raise PydanticCustomError(
            "unknown_currency", "must be an ISO 4217 currency code such as USD or EUR"
        )
    return value


BusinessDate = Annotated[
    date,
    BeforeValidator(_parse_date),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date",
            "description": f"ISO 8601 date from {date_min} to {date_max}",
        }
    ),
]
Money = Annotated[
    Decimal,
    BeforeValidator(_parse_money),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?$",
            "description": "non-negative decimal string with at most the currency's minor digits",
        }
    ),
]
Currency = Annotated[
    str,
    BeforeValidator(_parse_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code"}),
]


class Payload(BaseModel):
    """Base of every payload: unknown fields are errors, nothing is coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    kind: ClassVar[str]
    stream_prefix: ClassVar[str]
    stream_key: ClassVar[str]


class MoneyPayload(Payload):
    currency: Currency


# --- customers and contracts -----------------------------------------------------------------


class CustomerRegistered(Payload):
    kind = "customer.registered"
    stream_prefix, stream_key = "customer", "customer_id"
    customer_id: Id
    name: Name
    segment: Name | None = None


class ContractLine(Payload):
    line_id: Id
    description: Name
    amount: Money
    recognition: Literal["ratable", "point_in_time"]
    recurring: bool


class ContractSigned(MoneyPayload):
    kind = "contract.signed"
    stream_prefix, stream_key = "contract", "contract_id"
    contract_id: Id
    customer_id: Id
    start_date: BusinessDate
    end_date: BusinessDate
    lines: list[ContractLine] = Field(min_length=1, max_length=lines_count_max)


class ContractAmended(MoneyPayload):
    kind = "contract.amended"
    stream_prefix, stream_key = "contract", "contract_id"
    contract_id: Id
    effective_date: BusinessDate
    lines: list[ContractLine] = Field(min_length=1, max_length=lines_count_max)


class ContractCancelled(Payload):
    kind = "contract.cancelled"
    stream_prefix, stream_key = "contract", "contract_id"
    contract_id: Id
    effective_date: BusinessDate


class ObligationSatisfied(Payload):
    kind = "obligation.satisfied"
    stream_prefix, stream_key = "contract", "contract_id"
    contract_id: Id
    line_id: Id
    date: BusinessDate


# --- receivables -----------------------------------------------------------------------------


class InvoiceLine(Payload):
    description: Name
    amount: Money
    tax_amount: Money | None = None
    line_id: Id | None = None


class InvoiceIssued(MoneyPayload):
    kind = "invoice.issued"
    stream_prefix, stream_key = "invoice", "invoice_id"
    invoice_id: Id
    customer_id: Id
    contract_id: Id | None = None
    issue_date: BusinessDate
    due_date: BusinessDate
    lines: list[InvoiceLine] = Field(min_length=1, max_length=lines_count_max)
    total: Money


class InvoiceVoided(Payload):
    kind = "invoice.voided"
    stream_prefix, stream_key = "invoice", "invoice_id"
    invoice_id: Id
    date: BusinessDate


class CreditNoteIssued(MoneyPayload):
    kind = "credit_note.issued"
    stream_prefix, stream_key = "invoice", "invoice_id"
    credit_note_id: Id
    invoice_id: Id
    date: BusinessDate
    amount: Money


class InvoiceWrittenOff(MoneyPayload):
    kind = "invoice.written_off"
    stream_prefix, stream_key = "invoice", "invoice_id"
    invoice_id: Id
    date: BusinessDate
    amount: Money


class Allocation(Payload):
    invoice_id: Id
    amount: Money


class PaymentReceived(MoneyPayload):
    kind = "payment.received"
    stream_prefix, stream_key = "payment", "payment_id"
    payment_id: Id
    customer_id: Id
    date: BusinessDate
    amount: Money
    allocations: list[Allocation] | None = Field(default=None, max_length=lines_count_max)


class PaymentRefunded(MoneyPayload):
    kind = "payment.refunded"
    stream_prefix, stream_key = "payment", "payment_id"
    payment_id: Id
    date: BusinessDate
    amount: Money


# --- payables and the general journal --------------------------------------------------------


class ExpenseRecorded(MoneyPayload):
    kind = "expense.recorded"
    stream_prefix, stream_key = "expense", "expense_id"
    expense_id: Id
    vendor: Name
    category: Label
    incurred_date: BusinessDate
    due_date: BusinessDate | None = None
    amount: Money
    tax_amount: Money | None = None


class ExpensePaid(MoneyPayload):
    kind = "expense.paid"
    stream_prefix, stream_key = "expense", "expense_id"
    expense_id: Id
    date: BusinessDate
    amount: Money


class JournalLine(Payload):
    account: Label
    debit: Money | None = None
    credit: Money | None = None


class JournalPosted(MoneyPayload):
    kind = "journal.posted"
    stream_prefix, stream_key = "journal", "entry_id"
    entry_id: Id
    date: BusinessDate
    memo: Memo
    lines: list[JournalLine] = Field(min_length=2, max_length=lines_count_max)


payload_models: dict[str, type[Payload]] = {
    model.kind: model
    for model in (
        CustomerRegistered,
        ContractSigned,
        ContractAmended,
        ContractCancelled,
        ObligationSatisfied,
        InvoiceIssued,
        InvoiceVoided,
        CreditNoteIssued,
        InvoiceWrittenOff,
        PaymentReceived,
        PaymentRefunded,
        ExpenseRecorded,
        ExpensePaid,
        JournalPosted,
    )
}
event_types: dict[str, str] = {f"{type_prefix}{kind}{type_suffix}": kind for kind in payload_models}


def type_name(kind: str) -> str:
    return f"{type_prefix}{kind}{type_suffix}"


# --- the envelope ----------------------------------------------------------------------------


def _parse_tenant(value: Any) -> str:
    if not isinstance(value, str) or not tenant_pattern.fullmatch(value):
        raise PydanticCustomError(
            "invalid_tenant",
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return value


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return _in_utc_range(value)
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_time", "must be an RFC 3339 timestamp string")
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise PydanticCustomError(
            "invalid_time", "is not a valid RFC 3339 timestamp (e.g. 2026-01-31T12:00:00Z)"
        ) from None
    if parsed.tzinfo is None or "T" not in value.upper():
        raise PydanticCustomError(
            "invalid_time", "must be an RFC 3339 timestamp with a time zone offset or Z"
        )
    if not _rfc3339_pattern.fullmatch(value):
        raise PydanticCustomError(
            "invalid_time", "is not a valid RFC 3339 timestamp (e.g. 2026-01-31T12:00:00Z)"
        )
    return _in_utc_range(parsed)


def _in_utc_range(moment: datetime) -> datetime:
    """The time is kept in UTC: 0001-01-01T00:30:00+01:00 has no UTC form (year 0)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "invalid_time", "falls outside the years 1-9999 once converted to UTC"
        ) from None
    return moment


class Envelope(BaseModel):
    """CloudEvents 1.0 attributes we accept (structured mode). Unknown attributes are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    specversion: Literal["1.0"]
    id: Id
    source: Annotated[
        str, StringConstraints(min_length=1, max_length=source_length_max, pattern=_no_nul)
    ]
    type: Annotated[str, StringConstraints(min_length=1, max_length=id_length_max)]
    subject: (
        Annotated[
            str,
            StringConstraints(
                min_length=1, max_length=name_length_max, pattern=_no_control_characters
            ),
        ]
        | None
    ) = None
    time: Annotated[
        datetime,
        BeforeValidator(_parse_time),
        WithJsonSchema({"type": "string", "format": "date-time", "description": "RFC 3339"}),
    ]
    tenantid: Annotated[
        str,
        BeforeValidator(_parse_tenant),
        WithJsonSchema({"type": "string", "pattern": tenant_pattern_json}),
    ]
    expectedversion: Annotated[int, Field(ge=0)] | None = None
    datacontenttype: Literal["application/json"] | None = None
    # Kept in the stored metadata (JSONB), which cannot hold NUL: refused here, with the field
    # named, rather than by the database.
    dataschema: (
        Annotated[str, StringConstraints(max_length=source_length_max, pattern=_no_nul)] | None
    ) = None
    traceparent: Annotated[str, StringConstraints(max_length=128, pattern=_no_nul)] | None = None
    tracestate: Annotated[str, StringConstraints(max_length=512, pattern=_no_nul)] | None = None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProposedEvent:
    """A stateless-valid event, normalised, ready for the decisions that need stored state."""

    tenant_id: str
    event_id: str
    stream_id: str
    type: str
    kind: str
    time: datetime
    payload: Payload
    data: dict[str, Any]
    metadata: dict[str, Any]
    expected_version: int | None
    content_hash: str


# --- error mapping ---------------------------------------------------------------------------

_pydantic_codes: dict[str, RejectionCode] = {
    "missing": RejectionCode.missing_field,
    "extra_forbidden": RejectionCode.unknown_field,
    "string_too_long": RejectionCode.field_too_long,
    "too_long": RejectionCode.too_many_items,
    "invalid_date": RejectionCode.invalid_date,
    "invalid_amount": RejectionCode.invalid_amount,
    "negative_amount": RejectionCode.negative_amount,
    "amount_too_many_digits": RejectionCode.amount_too_many_digits,
    "unknown_currency": RejectionCode.unknown_currency,
    "invalid_tenant": RejectionCode.invalid_tenant,
    "invalid_time": RejectionCode.invalid_time,
}


def _field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _rejections_from(error: ValidationError, prefix: str) -> list[Rejection]:
    rejections = []
    for detail in error.errors(include_url=False):
        # Drop pydantic's internal validator names from the location (e.g. "function-before[...]").
        loc = tuple(part for part in detail["loc"] if not (isinstance(part, str) and "[" in part))
        code = _pydantic_codes.get(detail["type"], RejectionCode.invalid_value)
        message = detail["msg"]
        if code is RejectionCode.missing_field:
            message = "is required"
        elif code is RejectionCode.unknown_field:
            message = "is not a field of this event type"
        elif detail["type"] == "string_pattern_mismatch":
            message = "contains characters that are not allowed (control characters; NUL anywhere)"
        rejections.append(Rejection(code, _field_path(prefix, loc), message))
    return rejections


# --- money and the rules within one event ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _MoneySpec:
    """Where a payload type carries money: top-level fields and fields of list items."""

    fields: tuple[str, ...]
    list_fields: tuple[tuple[str, tuple[str, ...]], ...]


def _carries(annotation: Any, wanted: Any) -> bool:
    if annotation is wanted:
        return True
    return any(_carries(argument, wanted) for argument in get_args(annotation))


def _money_field_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(
        name for name, info in model.model_fields.items() if _carries(info.annotation, Decimal)
    )


def _money_spec(model: type[Payload]) -> _MoneySpec:
    list_fields = []
    for name, info in model.model_fields.items():
        for item_model in (Allocation, ContractLine, InvoiceLine, JournalLine):
            if _carries(info.annotation, item_model):
                list_fields.append((name, _money_field_names(item_model)))
    return _MoneySpec(_money_field_names(model), tuple(list_fields))


def _padded(text: str, digits: int) -> str | None:
    """A validated amount string with exactly `digits` minor digits (string ops only), or None
    when it has more."""
    integer_part, _, fraction_part = text.partition(".")
    if len(fraction_part) > digits:
        return None
    return f"{integer_part}.{fraction_part.ljust(digits, '0')}" if digits else integer_part


# Padded amounts by minor digits and text, as the parsed ones (below; bounded: `_remember`).
_padded_cache: dict[int, dict[str, str | None]] = {}


def _normalise_amount(
    value: str | Decimal,
    digits: int,
    currency: str,
    rejections: list[Rejection],
    name: str,
    list_name: str | None = None,
    index: int = 0,
) -> str:
    """Pad an amount to exactly the currency's minor digits; refuse one with more (at
    `data.name`, or `data.list_name[index].name`)."""
    text = value if type(value) is str else _money_text(value)
    cache = _padded_cache.get(digits)
    if cache is None:
        cache = _padded_cache[digits] = {}
    if text in cache:
        padded = cache[text]
    else:
        padded = _padded(text, digits)
        _remember(cache, text, padded)
    if padded is None:
        path = f"data.{name}" if list_name is None else f"data.{list_name}[{index}].{name}"
        rejections.append(
            Rejection(
                RejectionCode.amount_too_many_digits,
                path,
                f"has {len(text.partition('.')[2])} decimal places; {currency} allows {digits}",
            )
        )
        return text
    return padded


def _normalised_data(
    kind: str, payload: Payload, raw: dict[str, Any]
) -> tuple[dict[str, Any], list[Rejection]]:
    """The stored form of a validated payload: nulls dropped, money padded to the minor digits.

    Works on the raw (already validated) dict: cheaper than dumping the model back to JSON.
    Amounts with more digits than the payload's currency allows are reported here.
    """
    data = {key: value for key, value in raw.items() if value is not None}
    if not isinstance(payload, MoneyPayload):
        return data, []
    currency = payload.currency
    digits = minor_digits(currency)
    spec = _money_specs[kind]
    rejections: list[Rejection] = []
    for name in spec.fields:
        if name in data:
            data[name] = _normalise_amount(data[name], digits, currency, rejections, name)
    for list_name, item_fields in spec.list_fields:
        items = data.get(list_name)
        if not items:
            continue
        normalised_items = []
        for index, item in enumerate(items):
            item = {key: value for key, value in item.items() if value is not None}
            for name in item_fields:
                if name in item:
                    item[name] = _normalise_amount(
                        item[name], digits, currency, rejections, name, list_name, index
                    )
            normalised_items.append(item)
        data[list_name] = normalised_items
    return data, rejections


_money_specs: dict[str, _MoneySpec] = {
    kind: _money_spec(model) for kind, model in payload_models.items()
}


def _duplicate_line_ids(lines: list[ContractLine]) -> list[Rejection]:
    seen: set[str] = set()
    rejections = []
    for index, line in enumerate(lines):
        if line.line_id in seen:
            rejections.append(
                Rejection(
                    RejectionCode.duplicate_line_id,
                    f"data.lines[{index}].line_id",
                    f"line_id {line.line_id!r} appears more than once",
                )
            )
        seen.add(line.line_id)
    return rejections


def _rules_contract_signed(payload: ContractSigned) -> list[Rejection]:
    rejections = []
    if payload.end_date <= payload.start_date:
        rejections.append(
            Rejection(
                RejectionCode.end_date_not_after_start_date,
                "data.end_date",
                "must be after start_date (the end date is exclusive)",
            )
        )
    elif payload.end_date > (last := _years_after(payload.start_date, contract_term_years_max)):
        rejections.append(
            Rejection(
                RejectionCode.contract_term_too_long,
                "data.end_date",
                f"must be at most {contract_term_years_max} years after start_date"
                f" (on or before {last})",
            )
        )
    return rejections + _duplicate_line_ids(payload.lines)


def _rules_contract_amended(payload: ContractAmended) -> list[Rejection]:
    return _duplicate_line_ids(payload.lines)


def _rules_invoice_issued(payload: InvoiceIssued) -> list[Rejection]:
    rejections = []
    if payload.due_date < payload.issue_date:
        rejections.append(
            Rejection(
                RejectionCode.due_date_before_issue_date,
                "data.due_date",
                "must not be before issue_date",
            )
        )
    computed = sum((line.amount + (line.tax_amount or 0) for line in payload.lines), Decimal(0))
    if computed != payload.total:
        rejections.append(
            Rejection(
                RejectionCode.total_mismatch,
                "data.total",
                f"is {payload.total} but the lines' amounts and taxes add up to {computed}",
            )
        )
    return rejections


def _rules_payment_received(payload: PaymentReceived) -> list[Rejection]:
    if not payload.allocations:
        return []
    rejections = []
    seen: set[str] = set()
    for index, allocation in enumerate(payload.allocations):
        if allocation.invoice_id in seen:
            rejections.append(
                Rejection(
                    RejectionCode.duplicate_allocation,
                    f"data.allocations[{index}].invoice_id",
                    f"invoice {allocation.invoice_id!r} is allocated more than once",
                )
            )
        seen.add(allocation.invoice_id)
    allocated = sum((allocation.amount for allocation in payload.allocations), Decimal(0))
    if allocated > payload.amount:
        rejections.append(
            Rejection(
                RejectionCode.allocations_exceed_payment,
                "data.allocations",
                f"allocate {allocated}, more than the payment's amount {payload.amount}",
            )
        )
    return rejections


def _rules_expense_recorded(payload: ExpenseRecorded) -> list[Rejection]:
    if payload.due_date is not None and payload.due_date < payload.incurred_date:
        return [
            Rejection(
                RejectionCode.due_date_before_issue_date,
                "data.due_date",
                "must not be before incurred_date",
            )
        ]
    return []


def _rules_journal_posted(payload: JournalPosted) -> list[Rejection]:
    rejections = []
    debits = credits = Decimal(0)
    for index, line in enumerate(payload.lines):
        if (line.debit is None) == (line.credit is None):
            rejections.append(
                Rejection(
                    RejectionCode.journal_line_needs_one_side,
                    f"data.lines[{index}]",
                    "must have exactly one of debit or credit",
                )
            )
        debits += line.debit or 0
        credits += line.credit or 0
    if not rejections and debits != credits:
        rejections.append(
            Rejection(
                RejectionCode.journal_unbalanced,
                "data.lines",
                f"debits {debits} do not equal credits {credits}",
            )
        )
    return rejections


_event_rules: dict[type[Payload], Callable[[Any], list[Rejection]]] = {
    ContractSigned: _rules_contract_signed,
    ContractAmended: _rules_contract_amended,
    InvoiceIssued: _rules_invoice_issued,
    PaymentReceived: _rules_payment_received,
    ExpenseRecorded: _rules_expense_recorded,
    JournalPosted: _rules_journal_posted,
}


# --- normalisation and the gate --------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Canonical JSON for hashing: sorted keys, no whitespace, UTF-8.

    For the values the contract produces (ASCII keys, strings, booleans, integers, no floats) this is
    byte-for-byte RFC 8785; `tests/ledger/test_contract.py` checks it against the reference
    implementation.
    """
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def default_stream_id(payload: Payload) -> str:
    return f"{payload.stream_prefix}/{getattr(payload, payload.stream_key)}"


_utc_cache: dict[datetime, tuple[datetime, str]] = {}


def _in_utc(moment: datetime) -> tuple[datetime, str]:
    """The instant in UTC, and as RFC 3339 text with "Z". Cached by the instant (equal instants
    in other offsets hash alike and have the same answer; bounded: `_remember`)."""
    found = _utc_cache.get(moment)
    if found is None:
        utc = moment.astimezone(UTC)
        found = (utc, utc.isoformat().replace("+00:00", "Z"))
        _remember(_utc_cache, moment, found)
    return found


class _EventTooLarge(Bail):
    """Over `event_bytes_max`: the fast path steps aside, pydantic's path words the rejection."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _proposed(
    envelope: dict[str, Any], kind: str, payload: Payload, data: dict[str, Any]
) -> ProposedEvent:
    """The gate's answer for a valid event, from its envelope's field values."""
    stream_id = envelope["subject"] or default_stream_id(payload)
    metadata: dict[str, Any] = {"source": envelope["source"], "specversion": "1.0"}
    for optional in ("subject", "dataschema", "traceparent", "tracestate"):
        value = envelope[optional]
        if value is not None:
            metadata[optional] = value
    time_utc, time_text = _in_utc(envelope["time"])
    # The idempotency fingerprint: everything the publisher said except the precondition
    # `expectedversion`, so a retry after a lost answer is a duplicate, not a version conflict.
    content = {
        "id": envelope["id"],
        "tenantid": envelope["tenantid"],
        "type": envelope["type"],
        "source": envelope["source"],
        "subject": stream_id,
        "time": time_text,
        "data": data,
    }
    canonical = canonical_json(content)
    if len(canonical) > event_bytes_max:
        raise _EventTooLarge(len(canonical))
    return ProposedEvent(
        tenant_id=envelope["tenantid"],
        event_id=envelope["id"],
        stream_id=stream_id,
        type=envelope["type"],
        kind=kind,
        time=time_utc,
        payload=payload,
        data=data,
        metadata=metadata,
        expected_version=envelope["expectedversion"],
        content_hash=hashlib.sha256(canonical).hexdigest(),
    )


def parse_event(raw: Any) -> ProposedEvent | list[Rejection]:
    """Validate one event (already decoded from JSON) without touching stored state.

    The compiled checks (`ledger.compiled`) take a valid event through in a third of pydantic's
    time; whatever they are not sure of, every rejection included, goes through pydantic."""
    try:
        return _parse_fast(raw)
    except Bail:
        return _parse_checked(raw)


def _parse_fast(raw: Any) -> ProposedEvent:
    envelope = _fast_envelope(raw)
    kind = event_types.get(envelope["type"])
    if kind is None:
        raise Bail
    payload = _fast_payloads[kind](envelope["data"])
    data, rejections = _normalised_data(kind, payload, envelope["data"])
    if rejections:
        raise Bail
    rules = _event_rules.get(type(payload))
    if rules is not None and rules(payload):
        raise Bail
    return _proposed(envelope, kind, payload, data)


def _parse_checked(raw: Any) -> ProposedEvent | list[Rejection]:
    """pydantic's validation: the contract itself, with a rejection for every bad field."""
    if not isinstance(raw, dict):
        return [Rejection(RejectionCode.not_an_object, "", "an event must be a JSON object")]
    if raw.get("specversion", "1.0") != "1.0":
        return [
            Rejection(
                RejectionCode.invalid_specversion, "specversion", 'must be "1.0" (CloudEvents 1.0)'
            )
        ]
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as error:
        return _rejections_from(error, "")
    kind = event_types.get(envelope.type)
    if kind is None:
        return [
            Rejection(
                RejectionCode.unknown_type,
                "type",
                f"{envelope.type!r} is not a known event type (e.g. ledger.invoice.issued.v1)",
            )
        ]
    model = payload_models[kind]
    try:
        payload = model.model_validate(envelope.data)
    except ValidationError as error:
        return _rejections_from(error, "data")
    raw_data = envelope.data
    if any(type(value) is date for value in raw_data.values()):
        # A Python caller's `date`: stored, hashed and handed on as the ISO text it stands for.
        raw_data = {
            name: value.isoformat() if type(value) is date else value
            for name, value in raw_data.items()
        }
    data, rejections = _normalised_data(kind, payload, raw_data)
    if rejections:
        return rejections
    rules = _event_rules.get(model)
    if rules is not None:
        rejections = rules(payload)
        if rejections:
            return rejections
    try:
        return _proposed(envelope.__dict__, kind, payload, data)
    except _EventTooLarge as error:
        return [
            Rejection(
                RejectionCode.event_too_large,
                "data",
                f"makes the event {error.size:,} bytes as canonical JSON; at most "
                f"{event_bytes_max:,} are kept",
            )
        ]


# --- the fast path's pieces ------------------------------------------------------------------

# Parsed money, dates and times by their text: a stream repeats them (prices, days, seconds), and
# Decimal, date and datetime are immutable (bounded: `_remember`).
_Parsed = TypeVar("_Parsed")
_money_cache: dict[str, Decimal] = {}
_date_cache: dict[str, date] = {}
_time_cache: dict[str, datetime] = {}


def _cached_parse(
    parse: Callable[[str], _Parsed],
    errors: type[Exception],
    cache: dict[str, _Parsed],
) -> Callable[[Any], _Parsed]:
    """`parse` for the fast path: a str only (a Python caller's `Decimal` or `date`, a JSON
    number: pydantic's path says what they are), looked up by its text first, `Bail` at
    `errors` (pydantic's path words them)."""

    def parsed(value: Any) -> _Parsed:
        if type(value) is not str:
            raise Bail
        found = cache.get(value)
        if found is None:
            try:
                found = parse(value)
            except errors:
                raise Bail from None
            _remember(cache, value, found)
        return found

    return parsed


_fast_money = _cached_parse(
    functools.partial(parse_amount, digits_max=4), MoneyFormatError, _money_cache
)
_fast_date = _cached_parse(_parse_date, PydanticCustomError, _date_cache)
_fast_time = _cached_parse(_parse_time, PydanticCustomError, _time_cache)


_fast_patterns = {
    _no_control_characters: Translation(
        "$control(v) is not None", {"control": re.compile(r"[\x00-\x1f\x7f]").search}
    ),
    _no_nul: Translation("'\\x00' in v", {}),
}
_fast_translations: dict[Callable[..., Any], Translation] = {
    _parse_money: Translation("v = $money(v)", {"money": _fast_money}),
    _parse_date: Translation("v = $date(v)", {"date": _fast_date}),
    _parse_time: Translation("v = $time(v)", {"time": _fast_time}),
    _parse_currency: Translation(
        "if type(v) is not str or v not in $codes: raise Bail", {"codes": iso_4217_codes}
    ),
    _parse_tenant: Translation(
        "if type(v) is not str or $tenant(v) is None: raise Bail",
        {"tenant": tenant_pattern.fullmatch},
    ),
}
_fast_envelope = compile_validator(
    Envelope, patterns=_fast_patterns, translations=_fast_translations, construct=False
)
_fast_payloads = {
    kind: compile_validator(model, patterns=_fast_patterns, translations=_fast_translations)
    for kind, model in payload_models.items()
}


def parse_event_json(text: bytes | str) -> ProposedEvent | list[Rejection]:
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        return [Rejection(RejectionCode.malformed_json, "", f"is not valid JSON: {error}")]
    return parse_event(raw)


# --- JSON Schemas ----------------------------------------------------------------------------


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one v1 type: the envelope with that type's payload as `data`."""
    model = payload_models[kind]
    envelope = Envelope.model_json_schema()
    payload_schema = model.model_json_schema(ref_template="#/$defs/{model}")
    definitions = payload_schema.pop("$defs", {})
    properties = dict(envelope["properties"])
    properties["type"] = {"const": type_name(kind), "title": "Type", "type": "string"}
    properties["data"] = payload_schema
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://ledger.dev/schemas/{type_name(kind)}.json",
        "title": type_name(kind),
        "type": "object",
        "properties": properties,
        "required": envelope["required"],
        "additionalProperties": False,
    }
    if definitions:
        schema["$defs"] = definitions
    return schema
