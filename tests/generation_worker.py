"""A service process for the cross-process generation tests.

`python -m tests.generation_worker URL CALLS_FILE SECONDS BRAND...` asks a caching
`PricingLookup` for each brand's "jeans" Brand×Group through `get_or_generate`, all at
once, with a generator that appends a line to CALLS_FILE, sleeps SECONDS and answers.
It prints "ready" once listening, then one line per brand with its base price.
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal

from pricing_store import PricingLookup, create_engine


class SlowGenerator:
    """Records each call in a file shared by every worker, then sleeps."""

    def __init__(self, calls_file: str, seconds: float) -> None:
        self.calls_file = calls_file
        self.seconds = seconds

    async def brand_group(self, brand: str, group: str) -> dict[str, object]:
        # One short append: written at once, whichever worker writes.
        with open(self.calls_file, "a") as calls:  # noqa: ASYNC230
            calls.write(f"{os.getpid()} {brand}\n")
        await asyncio.sleep(self.seconds)
        return {"base_price": Decimal("42.00")}

    async def model(self, brand: str, group: str, model: str) -> dict[str, object]:
        raise AssertionError("no model is asked for")


async def main(url: str, calls_file: str, seconds: str, brands: list[str]) -> None:
    engine = create_engine(url)
    generator = SlowGenerator(calls_file, float(seconds))
    async with PricingLookup(engine, cache_size=100, generator=generator) as lookup:
        print("ready", flush=True)
        references = await asyncio.gather(
            *(lookup.get_or_generate(brand, "jeans") for brand in brands)
        )
        for reference in references:
            print(reference.brand, reference.base_price, flush=True)
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
