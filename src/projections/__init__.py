"""Read models (CQRS projections): pure projectors and the runners that feed them.

Each read model is a module of pure functions `(state, event) -> changes`; runners (the live
faust-streaming worker, replay from the store, and a test runner) do the I/O. Built in the streaming
and read-model issues; the write side in `ledger` does not depend on this package.
"""
