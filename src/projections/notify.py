"""After a commit, tell the gateways which tenants' read models moved (Redis pub/sub)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from projections.core import Touched

logger = logging.getLogger(__name__)

channel_prefix = "ledger:changes:"


def channel(tenant_id: str) -> str:
    return f"{channel_prefix}{tenant_id}"


class Notifier(Protocol):
    async def changed(
        self,
        applied: dict[str, int],
        projections: list[str],
        touched: Mapping[str, Sequence[Touched]] | None = None,
    ) -> None:
        """`applied`: tenant -> highest position applied; `touched`: per tenant, what each
        committed batch did, in order (None: not known)."""
        ...


class Notifiers:
    """Several notifiers, told in order."""

    def __init__(self, notifiers: list[Notifier]) -> None:
        self.notifiers = notifiers

    async def changed(
        self,
        applied: dict[str, int],
        projections: list[str],
        touched: Mapping[str, Sequence[Touched]] | None = None,
    ) -> None:
        for notifier in self.notifiers:
            await notifier.changed(applied, projections, touched)


class RedisNotifier:
    """Publishes {"tenant", "position", "projections"} on `ledger:changes:<tenant>`.

    Notices are hints, not data: a lost one only delays a dashboard until the next, and the gateway
    reads the read model itself. So a Redis outage is logged and never blocks projecting.
    """

    def __init__(self, url: str) -> None:
        import redis.asyncio

        self._client: Any = redis.asyncio.Redis.from_url(url)

    async def changed(
        self,
        applied: dict[str, int],
        projections: list[str],
        touched: Mapping[str, Sequence[Touched]] | None = None,
    ) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipeline:
                for tenant, position in applied.items():
                    notice = {"tenant": tenant, "position": position, "projections": projections}
                    pipeline.publish(channel(tenant), orjson.dumps(notice))
                await pipeline.execute()
        except Exception as error:  # redis errors must not stop projecting
            logger.warning("could not publish change notices to Redis: %r", error)

    async def close(self) -> None:
        await self._client.aclose()
