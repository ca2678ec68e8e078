"""The ledger's exceptions and rejection codes.

    LedgerError
    ├── RejectedError          a request was refused; carries `Rejection`s (code, field, message)
    ├── LimitExceededError     a request is over a named limit (size, count)
    ├── StoreError             the event store failed (wraps psycopg errors)
    │   └── StoreUnavailableError   the database cannot be reached
    └── InvariantError         a property that must always hold did not: a bug, never bad input

A `Rejection` is data, not an exception: batches answer with a list of them. `RejectionCode` lists
every reason an event is refused, in the order the checks run (TigerBeetle's result enums are the
model): a code is stable once published, a new reason gets a new code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectionCode(StrEnum):
    # Shape of the request and the envelope.
    malformed_json = "malformed_json"
    not_an_object = "not_an_object"
    missing_field = "missing_field"
    unknown_field = "unknown_field"
    invalid_specversion = "invalid_specversion"
    unknown_type = "unknown_type"
    invalid_tenant = "invalid_tenant"
    invalid_time = "invalid_time"
    # Shape of the payload.
    invalid_value = "invalid_value"
    field_too_long = "field_too_long"
    too_many_items = "too_many_items"
    invalid_date = "invalid_date"
    invalid_amount = "invalid_amount"
    negative_amount = "negative_amount"
    amount_too_many_digits = "amount_too_many_digits"
    unknown_currency = "unknown_currency"
    # Rules within one event.
    end_date_not_after_start_date = "end_date_not_after_start_date"
    contract_term_too_long = "contract_term_too_long"
    due_date_before_issue_date = "due_date_before_issue_date"
    duplicate_line_id = "duplicate_line_id"
    total_mismatch = "total_mismatch"
    duplicate_allocation = "duplicate_allocation"
    allocations_exceed_payment = "allocations_exceed_payment"
    journal_line_needs_one_side = "journal_line_needs_one_side"
    journal_unbalanced = "journal_unbalanced"
    event_too_large = "event_too_large"
    # Against what is already stored (checked under the append lock, in this order).
    exists_with_different_content = "exists_with_different_content"
    duplicate_in_request = "duplicate_in_request"
    wrong_expected_version = "wrong_expected_version"
    currency_mismatch = "currency_mismatch"
    customer_exists = "customer_exists"
    unknown_customer = "unknown_customer"
    contract_exists = "contract_exists"
    unknown_contract = "unknown_contract"
    contract_not_live = "contract_not_live"
    contract_customer_mismatch = "contract_customer_mismatch"
    effective_date_outside_term = "effective_date_outside_term"
    effective_date_before_previous_change = "effective_date_before_previous_change"
    unknown_contract_line = "unknown_contract_line"
    line_not_point_in_time = "line_not_point_in_time"
    obligation_already_satisfied = "obligation_already_satisfied"
    invoice_exists = "invoice_exists"
    unknown_invoice = "unknown_invoice"
    invoice_not_open = "invoice_not_open"
    invoice_customer_mismatch = "invoice_customer_mismatch"
    invoice_has_applications = "invoice_has_applications"
    allocation_exceeds_open_amount = "allocation_exceeds_open_amount"
    credit_exceeds_invoice = "credit_exceeds_invoice"
    credit_note_exists = "credit_note_exists"
    write_off_exceeds_open_amount = "write_off_exceeds_open_amount"
    payment_exists = "payment_exists"
    unknown_payment = "unknown_payment"
    refund_exceeds_payment = "refund_exceeds_payment"
    expense_exists = "expense_exists"
    unknown_expense = "unknown_expense"
    expense_payment_exceeds_open_amount = "expense_payment_exceeds_open_amount"
    entry_exists = "entry_exists"
    date_before_reference = "date_before_reference"
    # A unit (an atomic batch) refused because another event in it was.
    batch_rejected = "batch_rejected"


@dataclass(frozen=True, slots=True)
class Rejection:
    code: RejectionCode
    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code.value, "field": self.field, "message": self.message}


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class RejectedError(LedgerError):
    def __init__(self, rejections: list[Rejection]) -> None:
        self.rejections = rejections
        first = rejections[0] if rejections else None
        super().__init__(f"{first.code}: {first.field}: {first.message}" if first else "rejected")


class LimitExceededError(LedgerError):
    def __init__(self, limit_name: str, message: str) -> None:
        self.limit_name = limit_name
        super().__init__(message)


class StoreError(LedgerError):
    """The event store failed; the request may be retried (appends are idempotent by event id)."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached."""


class InvariantError(LedgerError):
    """Something that must always hold did not. Raised, never asserted: `python -O` keeps it."""


def invariant(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantError(message)
