"""Leases: which process generates a missing key, agreed through the database.

A lease is a row claimed, renewed and released in single autocommit statements: nothing
stays open while the generator runs, and it works through PgBouncer's transaction mode,
where session state (advisory locks, LISTEN) does not stay with the client. The owner
renews the leases it holds now every third of `lease_seconds`; a lease whose owner died
(SIGKILL, a lost host) or stalled expires `lease_seconds` after its last renewal, and the
next claimer takes over. A renewal that no longer matches a lease tells its holder it lost
it; until then the holder counts its lease as held up to `lease_seconds` after the last
renewal it saw succeed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from pricing_store.errors import LookupClosedError
from pricing_store.lookup.connections import DriverPool
from pricing_store.models.lease import LEASES

DEFAULT_LEASE_SECONDS = 3.0

# Claims a free or expired lease; also one this owner holds already, so a claim retried
# after its reply was lost does not lock its owner out.
CLAIM_SQL = f"""
    INSERT INTO {LEASES.fullname} AS lease (lease_key, owner, expires_at)
    VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
    ON CONFLICT (lease_key) DO UPDATE
        SET owner = excluded.owner, expires_at = excluded.expires_at
        WHERE lease.expires_at < clock_timestamp() OR lease.owner = excluded.owner
    RETURNING true
"""
# Only the leases held now: one whose release failed is left to expire.
RENEW_SQL = f"""
    UPDATE {LEASES.fullname}
    SET expires_at = clock_timestamp() + make_interval(secs => $2)
    WHERE owner = $1 AND lease_key = ANY($3::text[])
    RETURNING lease_key
"""
RELEASE_SQL = f"DELETE FROM {LEASES.fullname} WHERE lease_key = $1 AND owner = $2 RETURNING true"

logger = logging.getLogger(__name__)


def lease_key(table: str, *parts: str | None) -> str:
    """The lease's name for a table's key (JSON text: unambiguous for any key)."""
    return json.dumps([table, *parts], ensure_ascii=False)


class Leases:
    """The leases one lookup claims, renewed in the background while it holds any.

    `pool` is the leases' own: nothing else queues on it, so a renewal is never late
    because stores or reads are waiting.
    """

    def __init__(self, pool: DriverPool, seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self._pool = pool
        self.seconds = seconds
        self._owner = uuid.uuid4().hex
        # Each lease held: its claim (a new object per claim, so that a renewal sent before
        # a release and a new claim of the key does not speak for the new one), and until
        # when (time.monotonic()) it surely is held.
        self._held: dict[str, tuple[object, float]] = {}
        self._renewing: asyncio.Task[None] | None = None
        self.lost = 0

    async def claim(self, key: str) -> bool:
        """Claim the lease named `key`; False while another owner holds it unexpired.

        Raises:
            DatabaseUnavailableError: if the server cannot be reached.
        """
        asked = time.monotonic()
        claimed = await self._pool.fetchrow(CLAIM_SQL, key, self._owner, self.seconds)
        if claimed is None:
            return False
        self._held[key] = (object(), asked + self.seconds)
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.get_running_loop().create_task(self._renew())
        return True

    def holds(self, key: str) -> bool:
        """Whether the lease is surely still this owner's: renewed, and not found lost."""
        claim = self._held.get(key)
        return claim is not None and claim[1] > time.monotonic()

    async def release(self, key: str) -> None:
        """Give the lease up; a failure only leaves it to expire."""
        held = self._held.pop(key, None) is not None
        try:
            released = await self._pool.fetchrow(RELEASE_SQL, key, self._owner)
        except Exception:
            logger.warning("pricing_store: lease %s not released; it will expire", key)
            return
        if held and released is None:  # taken over before a renewal could say so
            self._lost(key)

    async def _renew(self) -> None:
        causes: set[type[Exception]] = set()  # warned of once each an outage, not each retry
        while self._held:
            await asyncio.sleep(self.seconds / 3)
            asked, sent = time.monotonic(), dict(self._held)
            try:
                rows = await self._pool.fetch(RENEW_SQL, self._owner, self.seconds, list(sent))
            except LookupClosedError:
                return
            except Exception as error:
                log = logger.debug if type(error) in causes else logger.warning
                log("pricing_store: leases not renewed (%s); retrying", error)
                causes.add(type(error))
                continue
            causes.clear()
            renewed = {row[0] for row in rows}
            for key, (claim, _) in sent.items():
                if self._held.get(key, (None,))[0] is not claim:
                    continue  # released, or released and claimed again, meanwhile
                if key in renewed:
                    self._held[key] = (claim, asked + self.seconds)
                else:
                    del self._held[key]
                    self._lost(key)

    def _lost(self, key: str) -> None:
        self.lost += 1
        logger.warning("pricing_store: lease %s lost: it expired and was taken over", key)

    async def close(self) -> None:
        """Stop renewing and close the leases' connections; leases still held expire."""
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.wait((self._renewing,))
        await self._pool.close()
