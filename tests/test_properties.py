"""Property-based: whatever a caller passes, it is stored exactly or refused clearly.

Each example either round-trips through PostgreSQL unchanged (after the documented
canonicalisation) or raises InvalidValueError; nothing else ever escapes.
"""

from __future__ import annotations

import contextlib
import io
import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy.ext.asyncio import AsyncSession

from pricing_store import BrandGroup, BrandGroupRepository, InvalidValueError, ModelRepository
from pricing_store.cli.records import Header, RecordError, read_records
from pricing_store.models import Model
from pricing_store.repositories.rows import item_values

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=Decimal("0"), max_value=Decimal("600"), places=2),
    st.text(),
    st.text(alphabet="0123456789.+-eE_ \u0660\u0662"),
    st.booleans(),
    st.none(),
)
keys = st.one_of(st.text(), st.text(max_size=120), st.integers(), st.none(), st.lists(st.text()))
string_lists = st.one_of(
    st.lists(st.text(max_size=250), max_size=110),
    st.lists(st.one_of(st.text(), st.integers(), st.none()), max_size=5),
    st.tuples(st.text()),
    st.text(),
    st.none(),
)


async def stored_or_refused(session: AsyncSession, values: dict[str, Any], model: Any) -> None:
    """Upsert the values and read them back, or see InvalidValueError before any SQL."""
    try:
        canonical = item_values(model, values)
    except InvalidValueError:
        return
    repository = (BrandGroupRepository if model is BrandGroup else ModelRepository)(session)
    async with session.begin_nested() as savepoint:
        row = await repository.upsert(values)
        await session.refresh(row)
        for field, value in canonical.items():
            assert getattr(row, field) == value, field
        await savepoint.rollback()


@EXAMPLES
@given(price=numbers, sensitivity=numbers)
async def test_any_price_and_sensitivity(
    session: AsyncSession, price: Any, sensitivity: Any
) -> None:
    values = {"brand": "B", "group_name": "g", "base_price": price}
    if sensitivity is not None:
        values["condition_sensitivity"] = sensitivity
    await stored_or_refused(session, values, BrandGroup)


@EXAMPLES
@given(coefficient=numbers)
async def test_any_coefficient(session: AsyncSession, coefficient: Any) -> None:
    values = {"brand": "B", "group_name": "g", "model": "m", "coefficient": coefficient}
    await stored_or_refused(session, values, Model)


@EXAMPLES
@given(brand=keys, group=keys, model=keys)
async def test_any_key(session: AsyncSession, brand: Any, group: Any, model: Any) -> None:
    values = {"brand": brand, "group_name": group, "model": model}
    await stored_or_refused(session, values, Model)


@EXAMPLES
@given(origins=string_lists, features=string_lists)
async def test_any_list(session: AsyncSession, origins: Any, features: Any) -> None:
    await stored_or_refused(
        session,
        {"brand": "B", "group_name": "g", "base_price": 25, "expected_origins": origins},
        BrandGroup,
    )
    await stored_or_refused(
        session,
        {"brand": "B", "group_name": "g", "model": "m", "expected_features": features},
        Model,
    )


@EXAMPLES
@given(assigned=st.one_of(numbers, keys, string_lists))
def test_model_setters_refuse_or_keep(assigned: Any) -> None:
    row = BrandGroup(brand="B", group_name="g", base_price=25)
    for field in ("brand", "base_price", "condition_sensitivity", "expected_trends"):
        try:
            setattr(row, field, assigned)
        except InvalidValueError:
            continue


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
record_fields = st.sampled_from(
    ["brand", "group_name", "base_price", "expected_origins", "model", "coefficient", "x"]
)


@EXAMPLES
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.dictionaries(record_fields, json_values).map(lambda d: json.dumps(d).encode()),
        ),
        max_size=5,
    ),
    file_format=st.sampled_from(["jsonl", "csv"]),
)
def test_the_record_reader_yields_records_or_line_errors(
    lines: list[bytes], file_format: str
) -> None:
    stream = io.BytesIO(b"\n".join(lines))
    for line, record in read_records(stream, file_format):
        assert line >= 1
        if isinstance(record, RecordError | Header):
            continue
        for table in (BrandGroup, Model):
            with contextlib.suppress(InvalidValueError):
                item_values(table, record)
