"""The life of a lookup and of its pools: states, the calls under way, shared tasks."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

from pricing_store.errors import LookupClosedError


class State(enum.Enum):
    """Where a lookup, or one of its pools, is in its life; each only moves forward."""

    NEW = "new"
    STARTING = "starting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class CallsUnderWay:
    """Counts the calls under way (`with calls:` around each), so that close() can wait."""

    def __init__(self) -> None:
        self.count = 0
        self.none = asyncio.Event()
        self.none.set()

    def __enter__(self) -> None:
        self.count += 1
        self.none.clear()

    def __exit__(self, *_: object) -> None:
        self.count -= 1
        if not self.count:
            self.none.set()


async def result_of(shared: asyncio.Future[Any]) -> Any:
    """Await a future others share without cancelling it for them; cancelled means closed.

    Raises:
        LookupClosedError: if the lookup's close() cancelled it.
    """
    await asyncio.wait((shared,))  # the caller's own cancellation still reaches the caller
    if shared.cancelled():
        raise LookupClosedError()
    return shared.result()
