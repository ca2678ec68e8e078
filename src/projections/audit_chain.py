"""Audit chain: a tamper-evident hash chain over each tenant's events (DESIGN section 5).

Per tenant, in position order: hash_n = SHA-256(hash_{n-1} || canonical JSON of event n), with
hash_0 = 32 zero bytes. hash_{n-1} enters as its 32 raw bytes; stored hashes are lowercase hex.
The chain is built here, in a projection, not in the append transaction: hashing in the append
needs a ledger-wide lock on the previous hash and costs write throughput (Formance's lesson). It
is O(1) per event: one read (the head), one link inserted, the head replaced.

Tables:
- `audit_links`: the chain as it was built, append-only: (tenant, position) -> n, event id, hash
  (the id lets verification tell a row moved elsewhere from a row changed in place);
- `audit_heads`: per tenant the newest link: n, hash, position. Verification compares it with
  the links and the store, so deleting the newest event (and even its link) does not go unseen.

What is hashed: every column of the stored `events` row, as one JSON object
    {"position", "tenantid", "id", "type", "subject", "streamversion", "time", "recordedat",
     "data", "metadata", "hash"}
- `subject` is the stream id; `time` and `recordedat` are RFC 3339 in UTC with a `Z` (parsed and
  re-rendered here, so the session time zone of whoever read the row cannot change them);
- `metadata` is the stored metadata whole: the publisher's `source` and `specversion`, the optional
  `subject`, `dataschema`, `traceparent`, `tracestate`, and `ledger`, the ledger's own decisions
  (allocations, unapplied cash, ...);
- `hash` is the store's idempotency fingerprint (what it is worth: `projections.audit_verify`).
A projector fed from the store (`ProjectedEvent.from_recorded`) and one fed from Kafka
(`ProjectedEvent.from_kafka`, from the relay's `ce_*` headers, `ce_metadata` and `ce_ledger`
included) see the same values, so the live worker, catch-up and replay build the same chain
(`tests/projections/test_audit_chain.py` checks both). A message from a relay older than
`ce_metadata` carries only `source` and `specversion` of the metadata: an event with tracing
attributes chained from such a message would later verify as changed.

Canonical JSON: `ledger.contract.canonical_json` (orjson, sorted keys, no whitespace). For what the
ledger stores (ASCII keys, strings, booleans, small integers, no floats) it is byte for byte
RFC 8785; the tests check it against the `rfc8785` reference implementation on every kind of
event. The reference implementation costs ~65 us per event against ~1 us, which the live worker
would feel.

Verification lives in `projections.audit_verify`; the pure comparison it relies on is here:
`diagnose` names the first position where the stored chain and the chain recomputed from the store
disagree, and why.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Table, Text

from ledger.contract import canonical_json
from ledger.errors import invariant
from projections.core import ProjectedEvent
from projections.tables import Key, Rows, tenant_table

audit_links = tenant_table(
    "audit_links",
    Column("position", BigInteger, primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("hash", Text, nullable=False),
)
audit_heads = tenant_table(
    "audit_heads",
    Column("n", BigInteger, nullable=False),
    Column("hash", Text, nullable=False),
    Column("position", BigInteger, nullable=False),
)

genesis_hash = "0" * 64


def hashed_document(event: ProjectedEvent) -> dict[str, Any]:
    """The JSON object hashed for `event`: every column of its stored row."""
    return {
        "position": event.position,
        "tenantid": event.tenant_id,
        "id": event.event_id,
        "type": event.type,
        "subject": event.stream_id,
        "streamversion": event.stream_version,
        "time": utc_rfc3339(event.time),
        "recordedat": utc_rfc3339(event.recorded_at),
        "data": event.data,
        "metadata": event.metadata,
        "hash": event.content_hash,
    }


# An instant already in the one rendering: UTC with `Z`, microseconds only when not zero (as
# `datetime.isoformat` renders them). What the store's rows and the relay's headers carry.
_rendered_utc = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?!000000)\d{6})?Z")


def utc_rfc3339(text: str) -> str:
    """One rendering of an instant, whatever the offset it arrived with ("" stays "")."""
    if not text:
        return text
    moment = datetime.fromisoformat(text)  # refuses what is no instant, rendered or not
    if _rendered_utc.fullmatch(text):  # rendering it again gives it back: half the cost
        return text
    if moment.tzinfo is None:  # never stored so (timestamptz); hash what arrived, do not guess
        return text
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def chain_hash(previous_hash: str, event: ProjectedEvent) -> str:
    """hash_n from hash_{n-1} (hex) and event n."""
    digest = hashlib.sha256(bytes.fromhex(previous_hash))
    digest.update(canonical_json(hashed_document(event)))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    """One link of a tenant's chain: event n, at `position`, and hash_n."""

    position: int
    n: int
    event_id: str
    hash: str


@dataclass(frozen=True, slots=True)
class Head:
    """The newest link's n, hash and position; n = 0 for an empty chain."""

    n: int = 0
    hash: str = genesis_hash
    position: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"n": self.n, "hash": self.hash, "position": self.position}


def fingerprint(event: ProjectedEvent) -> str:
    """What the store's `hash` column should hold for this row: the idempotency fingerprint that
    `ledger.contract.parse_event` computes from the publisher's content."""
    content = {
        "id": event.event_id,
        "tenantid": event.tenant_id,
        "type": event.type,
        "source": event.metadata.get("source"),
        "subject": event.stream_id,
        "time": utc_rfc3339(event.time),
        "data": event.data,
    }
    return hashlib.sha256(canonical_json(content)).hexdigest()


def next_link(head: Head, event: ProjectedEvent) -> Link:
    return Link(event.position, head.n + 1, event.event_id, chain_hash(head.hash, event))


def head_of(link: Link) -> Head:
    return Head(link.n, link.hash, link.position)


class AuditChain:
    name = "audit_chain"
    tables = (audit_links, audit_heads)

    def needs(self, event: ProjectedEvent) -> Iterable[tuple[Table, Key]]:
        yield audit_heads, ()

    def apply(self, rows: Rows, event: ProjectedEvent) -> None:
        # `next_link` and `head_of` inline, as plain values: this runs for every event.
        stored = rows.get(audit_heads)
        if stored is None:
            n, previous_hash, previous_position = 0, genesis_hash, 0
        else:
            n, previous_hash, previous_position = stored["n"], stored["hash"], stored["position"]
        # The writer applies a tenant's events once each, in position order; a chain that went
        # backwards would make every later verification fail, so refuse the batch instead.
        if event.position <= previous_position:
            invariant(
                False,
                f"audit chain of {event.tenant_id}: position {event.position} after "
                f"{previous_position}",
            )
        link_hash = chain_hash(previous_hash, event)
        rows.insert(
            audit_links,
            {"position": event.position, "n": n + 1, "event_id": event.event_id, "hash": link_hash},
        )
        rows.put(audit_heads, {"n": n + 1, "hash": link_hash, "position": event.position})


# --- where a chain breaks: the pure half of verification --------------------------------------


@dataclass(frozen=True, slots=True)
class Break:
    """The first position where the chain and the store disagree; `code` is stable, `reason` is
    for people."""

    position: int
    code: str
    reason: str


# The codes, in the order `diagnose` tries them at one position.
row_moved = "row_moved"  # an event is at another position than where it was chained
row_inserted = "row_inserted"  # an event that was never chained sits among chained ones
row_replaced = "row_replaced"  # a chained event is gone and an unchained one has its position
row_deleted = "row_deleted"  # a chained event is no longer in the store
row_changed = "row_changed"  # same event id and position, different content
fingerprint_mismatch = "fingerprint_mismatch"  # a row's `hash` does not match its content
beyond_ledger_head = "beyond_ledger_head"  # an event above the head the ledger recorded
head_mismatch = "head_mismatch"  # the stored head is not the newest stored link


def diagnose(
    stored: Link | None,
    recomputed: Link | None,
    chained_position_of_recomputed: int | None,
    store_position_of_stored: int | None,
) -> Break:
    """Why the stored link and the link recomputed from the store at the first disagreement
    differ. `stored` is None when the chain ends first, `recomputed` when the store does; each
    lookup says where the other side's event id is found (None: nowhere)."""
    if recomputed is not None and (stored is None or recomputed.position <= stored.position):
        position, event_id = recomputed.position, recomputed.event_id
        if chained_position_of_recomputed is not None and (
            chained_position_of_recomputed != position
        ):
            return Break(
                position,
                row_moved,
                f"event {event_id!r} is at position {position}, but it was chained at position "
                f"{chained_position_of_recomputed}: rows were moved behind the ledger's back",
            )
        if stored is not None and stored.position == position:
            if stored.event_id == event_id:
                return Break(
                    position,
                    row_changed,
                    f"event {event_id!r} at position {position} is not what was chained there: "
                    "the row was changed behind the ledger's back",
                )
            if store_position_of_stored is None:
                return Break(
                    position,
                    row_replaced,
                    f"event {stored.event_id!r}, chained at position {position}, is gone and "
                    f"event {event_id!r}, never chained, has its position",
                )
        return Break(
            position,
            row_inserted,
            f"event {event_id!r} at position {position} was never chained: the row was "
            "inserted behind the ledger's back",
        )
    if stored is None:
        raise ValueError("diagnose needs a stored or a recomputed link")
    if store_position_of_stored is not None:
        return Break(
            stored.position,
            row_moved,
            f"event {stored.event_id!r} was chained at position {stored.position}, but it is "
            f"at position {store_position_of_stored}: rows were moved behind the ledger's back",
        )
    return Break(
        stored.position,
        row_deleted,
        f"event {stored.event_id!r}, chained at position {stored.position}, is missing from the "
        "store: the row was deleted behind the ledger's back",
    )


def check_head(head: Head | None, newest: Link | None) -> Break | None:
    """The stored head must be the newest stored link (both are written in one transaction)."""
    if head is None and newest is None:
        return None
    if head is None:
        position = 0 if newest is None else newest.position
        return Break(
            position,
            head_mismatch,
            f"links are stored up to position {position}, but the chain has no head",
        )
    if newest is None or head != head_of(newest):
        newest_text = "no link" if newest is None else f"link {newest.n} at {newest.position}"
        return Break(
            max(head.position, 0 if newest is None else newest.position),
            head_mismatch,
            f"the chain's head (link {head.n} at position {head.position}) is not its newest "
            f"stored link ({newest_text}): the newest rows were deleted behind the ledger's back",
        )
    return None
