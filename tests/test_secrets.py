"""A password in a URL never shows: not in logs, errors, reprs, Alembic or CLI output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from pricing_store import BrandGroupRepository, PricingLookup, create_engine, create_session_factory
from pricing_store.db import settings_of
from pricing_store.errors import DatabaseUnavailableError
from tests.helpers import ROOT

PASSWORD = "Pw-Canary-5519"


def run(command: str, *arguments: str, url: URL) -> str:
    result = subprocess.run(
        [str(Path(sys.executable).parent / command), *arguments],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0  # every run here fails: the server is unreachable
    return result.stdout + result.stderr


async def test_the_password_never_shows(
    own_database: URL, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    reachable = own_database.set(password=PASSWORD)
    unreachable = URL.create("postgresql+asyncpg", "someone", PASSWORD, "127.0.0.1", 1, "nowhere")
    seen: list[str] = []

    engine = create_engine(reachable, echo=True)
    async with create_session_factory(engine)() as session:
        await BrandGroupRepository(session).count()
    seen += [repr(engine), str(engine.url), repr(settings_of(engine)), repr(engine.pool)]
    await engine.dispose()

    broken = create_engine(unreachable)
    with pytest.raises(DatabaseUnavailableError) as error:
        async with create_session_factory(broken)() as session:
            await BrandGroupRepository(session).count()
    seen += [str(error.value), repr(error.value), str(error.value.__cause__)]
    lookup = PricingLookup(broken)
    with pytest.raises(DatabaseUnavailableError) as lookup_error:
        await lookup.get("Levi's", "jeans")
    seen += [str(lookup_error.value), repr(lookup)]
    await lookup.close()
    await broken.dispose()

    seen.append(run("alembic", "upgrade", "head", url=unreachable))
    seen.append(run("pricing-store", "stats", url=unreachable))
    seen.append(run("pricing-store", "check", url=unreachable))
    seen += [record.getMessage() for record in caplog.records]

    assert any("127.0.0.1" in text for text in seen)  # the errors did name where
    assert not [text for text in seen if PASSWORD in text]
