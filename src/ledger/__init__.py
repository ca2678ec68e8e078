"""ledger: an event-sourced financial ledger.

The write side lives here: the event contract (`ledger.contract`), validation and decisions
(`ledger.decide`), the event store (`ledger.store`), the append service (`ledger.service`) and its
entry points (`ledger.api` over HTTP, `ledger.cli`, `ledger.client` for Python callers).
"""

__version__ = "0.1.0"
