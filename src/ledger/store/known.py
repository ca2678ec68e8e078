"""What the writer knows of the stored reference state, so that most appends take one round trip.

An append needs the reference state of the keys its events name (`ledger_refs`, stream versions,
whether an event id exists), read under the position lock: a round trip to lock and load, then
one to write and commit. The writer connection is the only one of its process, and most of the time
the only one appending at all, so what it loaded and wrote itself is still what is stored, as long
as nobody else has appended since. `KnownState` keeps that: the reference states (decoded, as
the rules use them), stream versions and customers' open invoices it read or wrote, valid at
`(head, stamp)` (the stamp is a random number each writing transaction sets, migration 007).

The next append is decided on that knowledge (`guess`: the same answer `ledger_lock_and_load`
would give, built from memory) and sent with the head and stamp it assumed, in one round trip:
`ledger_append_known` takes the lock and writes only if the head and stamp are unchanged and every
key the writer did not know (event ids, new streams, new references) is absent, which is what the
decision assumed of them. Exact by construction: under the lock the stored state is then the state
the events were decided on. Otherwise it writes nothing and the append takes the two round trips,
whose load the writer learns from.

No guess is made when it would surely fail: the open invoices of a registered customer the writer
does not know (auto-allocation needs them in order, as far as a payment goes; of a customer it does
not know to be registered it assumes, and the call checks, that there are none), a payment that
goes past the prefix of them the writer knows, an invoice a known payment was applied to but
the writer does not know, a unit refused (refusals often come from a key assumed absent that exists; the two round
trips give the exact answer), or while another writer appends: after a stale guess, guesses resume
only once a load finds the head where this writer left it.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from ledger.decide import (
    InvoiceState,
    Needs,
    OpenKey,
    PaymentState,
    State,
    TenantState,
    insert_key,
    is_open,
    open_key,
    remove_key,
)

RefKey = tuple[str, str, str]  # (tenant, kind, ref_id)

# When the knowledge holds more keys than this (references, streams, customers), the older half
# of the references and streams (by when they were first learnt) and every customer's set are
# dropped: a process's memory stays bounded (~500 bytes a key: 12 MB) and what is used again is
# learnt again by the next loads.
known_keys_max = 25_000

# Larger transactions (batches) take the two round trips, and what they wrote is not learnt but
# dropped: one round trip less is nothing beside a thousand events' work, and learning what a
# thousand events wrote costs more than it saves (2 ms per 1,000, measured).
known_events_max = 100

_unknown: Any = object()


def new_stamp() -> int:
    """A writing transaction's stamp: random, never the column's initial 0."""
    return secrets.randbits(62) + 1


@dataclass(slots=True)
class Guess:
    """The state an append is decided on, and the keys it assumes absent."""

    # What `ledger_lock_and_load` would load, as the store decodes it (`_state_from`).
    state: dict[str, TenantState]
    assumed: dict[str, list[list[Any]]]  # in `ledger_load`'s form
    # (tenant, customer): every open invoice of theirs the writer knows is in `state`, and it does
    # not know them all: a payment that needs more must take the load.
    exhausted: set[tuple[str, str]] = field(default_factory=set)


@dataclass(slots=True)
class OpenInvoices:
    """What the writer knows of a customer's open invoices: exactly the stored ones up to
    `through`, in allocation order (`through` None: all of them)."""

    keys: list[OpenKey]
    through: OpenKey | None


def open_prefixes(
    loaded: dict[str, Any], state: dict[str, TenantState]
) -> Iterator[tuple[str, str, list[OpenKey], OpenKey | None]]:
    """Per customer whose open invoices a load read (`open`: the ids of the prefix in order and
    the limit it was read with): their keys in order, and the last one when the prefix stopped
    at its limit (more may be stored), else None."""
    for tenant, customer_id, limit, invoice_ids in loaded.get("open", ()):
        refs = state[tenant].refs if invoice_ids else {}
        keys = sorted(open_key(i, cast(InvoiceState, refs[("invoice", i)])) for i in invoice_ids)
        through = keys[-1] if len(keys) >= limit else None
        yield tenant, customer_id, keys, through


class KnownState:
    """The states are the decoded ones the rules use, shared with each transaction's state: the
    rules never change a state in place (`decide._Overlay.for_update` copies first)."""

    def __init__(self, keys_max: int = known_keys_max) -> None:
        self.keys_max = keys_max
        self.head: int | None = None
        self.stamp = 0
        self.refs: dict[RefKey, State | None] = {}  # None: known to be absent
        self.streams: dict[tuple[str, str], int] = {}  # 0: no event in the stream
        # (tenant, customer) -> its open invoices in allocation order, as far as a load read them.
        self.customers: dict[tuple[str, str], OpenInvoices] = {}
        # False after another writer was seen appending, until a load finds it quiet.
        self.calm = True

    @property
    def ready(self) -> bool:
        return self.head is not None and self.calm

    def forget(self) -> None:
        """Know nothing (a failed transaction may or may not have committed)."""
        self.head = None
        self.stamp = 0
        self._drop_keys()

    def _drop_keys(self) -> None:
        self.refs.clear()
        self.streams.clear()
        self.customers.clear()

    def guess(self, needs: Needs, registering: set[tuple[str, str]]) -> Guess | None:
        """The state `ledger_lock_and_load(needs)` gives if nobody else appended, or None when a
        guess would surely be wrong. `registering`: the (tenant, customer) pairs the events
        register; the call also checks that they have no open invoice, so that the writer knows
        every invoice of theirs from then on."""
        registering = set(registering)  # the caller's stays as it was
        exhausted: set[tuple[str, str]] = set()
        assumed: dict[str, list[list[Any]]] = {
            # Event ids are new in all but retries: every one is assumed absent, never kept.
            "event_ids": [[t, i] for t, ids in needs.event_ids.items() for i in ids],
            "streams": [],
            "refs": [],
            "customers": [],
        }
        state: dict[str, TenantState] = {}
        for tenant, stream_ids in needs.streams.items():
            versions = state.setdefault(tenant, TenantState()).stream_versions
            for stream_id in stream_ids:
                version = self.streams.get((tenant, stream_id))
                if version is None:
                    assumed["streams"].append([tenant, stream_id])
                versions[stream_id] = version or 0
        for tenant, keys in needs.refs.items():
            tenant_state = state.setdefault(tenant, TenantState())
            for kind, ref_id in keys:
                value = self.refs.get((tenant, kind, ref_id), _unknown)
                if value is _unknown:
                    assumed["refs"].append([tenant, kind, ref_id])
                elif value is not None:
                    tenant_state.put_loaded(kind, ref_id, value)
                    if isinstance(value, PaymentState):  # the load follows it to its invoices
                        for invoice_id, _amount in value.allocations:
                            invoice = self.refs.get((tenant, "invoice", invoice_id))
                            if invoice is None:
                                return None
                            tenant_state.put_loaded("invoice", invoice_id, invoice)
        for tenant, limits in needs.customers_for_auto_allocation.items():
            tenant_state = state.setdefault(tenant, TenantState())
            for customer_id, limit in limits.items():
                known = self.customers.get((tenant, customer_id))
                if known is None:
                    if self.refs.get((tenant, "customer", customer_id), None) is not None:
                        return None  # a registered customer: its invoices must be loaded
                    # Not registered, as far as the writer knows: no invoices, checked.
                    registering.add((tenant, customer_id))
                    continue
                # What a load with this limit would read: the first `limit`, and through the
                # last of them if more are stored (or may be: beyond what the writer knows).
                prefix = known.keys[:limit]
                for key in prefix:
                    invoice = self.refs.get((tenant, "invoice", key[2]))
                    if invoice is None or not is_open(invoice):
                        return None  # never so: closed invoices leave the list
                    tenant_state.put_loaded("invoice", key[2], invoice)
                if len(prefix) < len(known.keys):
                    tenant_state.open_through[customer_id] = prefix[-1]
                elif known.through is not None:
                    tenant_state.open_through[customer_id] = known.through
                    exhausted.add((tenant, customer_id))
        assumed["customers"] = [
            [tenant, customer_id, 1]  # one open invoice is enough to prove the guess wrong
            for tenant, customer_id in sorted(registering)
            if (tenant, customer_id) not in self.customers
        ]
        return Guess(state, assumed, exhausted)

    def learn_loaded(
        self, loaded: dict[str, Any], needs: Needs, state: dict[str, TenantState]
    ) -> None:
        """Keep what a load under the lock found (`state`: decoded from it, not yet decided on).
        The caller has told `seen` the head and stamp it was loaded at."""
        for tenant, stream_id, version in loaded["streams"]:
            self.streams[(tenant, stream_id)] = int(version or 0)
        for tenant, tenant_state in state.items():
            for (kind, ref_id), value in tenant_state.refs.items():
                self.refs[(tenant, kind, ref_id)] = value
        for tenant, keys in needs.refs.items():
            loaded_refs = state[tenant].refs if tenant in state else {}
            for kind, ref_id in keys:
                if (kind, ref_id) not in loaded_refs:
                    self.refs[(tenant, kind, ref_id)] = None
        for tenant, customer_id, prefix, through in open_prefixes(loaded, state):
            self.customers[(tenant, customer_id)] = OpenInvoices(prefix, through)

    def seen(self, head: int, stamp: int) -> None:
        """The stored state is at `(head, stamp)` (read under the lock)."""
        if self.head is not None:
            self.calm = (head, stamp) == (self.head, self.stamp)
        if (head, stamp) != (self.head, self.stamp):
            self._drop_keys()
            self.head, self.stamp = head, stamp

    def written_unlearnt(self, head: int, stamp: int) -> None:
        """A transaction wrote what the writer will not learn: it knows nothing but the head."""
        self._drop_keys()
        self.head, self.stamp = head, stamp

    def learn_guessed(self, guess: Guess) -> None:
        """The keys a guess assumed absent were absent: a written guess proved it."""
        for tenant, stream_id in guess.assumed["streams"]:
            self.streams[(tenant, stream_id)] = 0
        for tenant, kind, ref_id in guess.assumed["refs"]:
            self.refs[(tenant, kind, ref_id)] = None
        for tenant, customer_id, _limit in guess.assumed["customers"]:
            self.customers[(tenant, customer_id)] = OpenInvoices([], None)

    def missed(self, answer: dict[str, Any]) -> None:
        """A guess was not written: someone else appended (stale), or an assumed key exists."""
        if answer.get("stale"):
            self.forget()
            self.calm = False

    def learn_written(
        self,
        state: dict[str, TenantState],
        streams: list[tuple[str, str, int]],
        head: int,
        stamp: int,
    ) -> None:
        """Keep what a committed transaction wrote: the references its units changed (`dirty` in
        its decided `state`), and the stream versions of its events; `(head, stamp)` is then the
        stored state's."""
        for tenant, tenant_state in state.items():
            for kind, ref_id in tenant_state.dirty:
                value = tenant_state.refs[(kind, ref_id)]
                self.refs[(tenant, kind, ref_id)] = value
                if isinstance(value, InvoiceState):
                    known = self.customers.get((tenant, value.customer_id))
                    if known is not None:
                        key = open_key(ref_id, value)
                        if not is_open(value):
                            remove_key(known.keys, key)
                        elif known.through is None or key <= known.through:
                            insert_key(known.keys, key)
        for tenant, stream_id, version in streams:
            self.streams[(tenant, stream_id)] = version
        self.head, self.stamp = head, stamp
        if len(self.refs) + len(self.streams) + len(self.customers) > self.keys_max:
            self._trim()

    def _trim(self) -> None:
        """Forget the older half: an unknown key is assumed absent and checked, never trusted.
        The customers' sets go whole (one may name an invoice forgotten here)."""
        for ref_key in list(itertools.islice(self.refs, len(self.refs) // 2)):
            del self.refs[ref_key]
        for stream_key in list(itertools.islice(self.streams, len(self.streams) // 2)):
            del self.streams[stream_key]
        self.customers.clear()
