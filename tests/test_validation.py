"""Value rules, as a user meets them when building model objects (no database needed)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing_store import BrandGroup, InvalidValueError, Model


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (25, Decimal("25.00")),
        (Decimal("19.99"), Decimal("19.99")),
        ("19.99", Decimal("19.99")),
        (" 42.5 ", Decimal("42.50")),
        (19.99, Decimal("19.99")),
        (0.1 + 0.2 + 9.7, Decimal("10.00")),
        ("19.990", Decimal("19.99")),
        (5, Decimal("5.00")),
        (500, Decimal("500.00")),
    ],
)
def test_prices_become_exact_decimals_at_the_column_scale(given: object, stored: Decimal) -> None:
    assert BrandGroup(base_price=given).base_price == stored
    assert str(BrandGroup(base_price=given).base_price) == str(stored)


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        (Decimal("19.999"), "at most 2 decimal places"),
        (19.999, "at most 2 decimal places"),
        (Decimal("4.99"), "between 5.00 and 500.00"),
        (500.01, "between 5.00 and 500.00"),
        (float("nan"), "finite"),
        (Decimal("NaN"), "finite"),
        ("nan", "must be a number in ASCII digits"),
        (float("inf"), "finite"),
        ("-Infinity", "must be a number in ASCII digits"),
        ("2_0", "must be a number in ASCII digits"),
        ("\u0662\u0660", "must be a number in ASCII digits"),  # Arabic-Indic digits
        ("1e400", "must be a number in ASCII digits"),
        (10**30, "between 5.00 and 500.00"),
        (12345678901234567890123456789, "between 5.00 and 500.00"),
        (Decimal("1e400"), "between 5.00 and 500.00"),
        ("twenty", "must be a number"),
        (True, "not a boolean"),
        ([25], "must be a number"),
        (None, "must not be None"),
    ],
)
def test_bad_prices_are_rejected_naming_field_and_rule(given: object, rule: str) -> None:
    with pytest.raises(InvalidValueError, match=rf"^base_price: .*{rule}") as raised:
        BrandGroup(base_price=given)
    assert raised.value.field == "base_price"
    assert isinstance(raised.value, ValueError)


def test_sensitivity_range_and_scale() -> None:
    assert BrandGroup(condition_sensitivity="0.5").condition_sensitivity == Decimal("0.50")
    assert BrandGroup(condition_sensitivity=1.5).condition_sensitivity == Decimal("1.50")
    for outside in ["0.49", "1.51", 0]:
        with pytest.raises(InvalidValueError, match=r"^condition_sensitivity: must be between"):
            BrandGroup(condition_sensitivity=outside)


def test_coefficient_range_and_scale() -> None:
    assert Model(coefficient="0.5").coefficient == Decimal("0.50")
    assert Model(coefficient=3).coefficient == Decimal("3.00")
    with pytest.raises(InvalidValueError, match=r"^coefficient: must be between 0.5 and 3.0"):
        Model(coefficient="3.01")
    with pytest.raises(InvalidValueError, match=r"^coefficient: must be between 0.5 and 3.0"):
        Model(coefficient=0.49)
    with pytest.raises(InvalidValueError, match=r"^coefficient: must have at most 2 decimal"):
        Model(coefficient="1.405")


def test_keys_are_trimmed_and_nfc_normalised_keeping_case() -> None:
    decomposed = "Cafe\u0301 Noir"
    row = Model(brand="  Levi's\t", group_name=" Jeans ", model=decomposed)

    assert row.brand == "Levi's"
    assert row.group_name == "Jeans"
    assert row.model == "Caf\u00e9 Noir"


@pytest.mark.parametrize(
    ("field", "given", "rule"),
    [
        ("brand", "", "must not be empty or blank"),
        ("brand", "   ", "must not be empty or blank"),
        ("brand", "Le\x00vis", "NUL"),
        ("brand", "Levi's \ud83d", "lone surrogate"),
        ("model", "\udc00 501", "lone surrogate"),
        ("brand", "x" * 101, "at most 100 characters"),
        ("group_name", "g" * 51, "at most 50 characters"),
        ("model", "m" * 101, "at most 100 characters"),
        ("model", 501, "must be a string"),
        ("brand", None, "must not be None"),
    ],
)
def test_bad_keys_are_rejected(field: str, given: object, rule: str) -> None:
    with pytest.raises(InvalidValueError, match=rf"^{field}: .*{rule}"):
        Model(**{field: given})


def test_a_key_that_fits_only_once_trimmed_is_accepted() -> None:
    assert Model(group_name="  " + "g" * 50 + "  ").group_name == "g" * 50


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        ("USA", "must be a list of strings"),
        (["USA", 1], "elements must be strings"),
        (["USA", ""], "elements must not be empty"),
        (["USA", "Me\x00xico"], "NUL"),
        (["USA", "M\u00e9xico \ud83c"], "lone surrogate"),
        (None, "must not be None"),
    ],
)
def test_jsonb_lists_hold_non_empty_strings_only(given: object, rule: str) -> None:
    with pytest.raises(InvalidValueError, match=rf"^expected_origins: .*{rule}"):
        BrandGroup(expected_origins=given)


def test_in_place_list_edits_are_validated_too() -> None:
    row = BrandGroup(expected_trends=("y2k",))
    row.expected_trends.append("workwear")
    row.expected_trends[0] = "Y2K"

    with pytest.raises(InvalidValueError, match=r"^expected_trends: elements must not be empty"):
        row.expected_trends.append("")
    with pytest.raises(InvalidValueError, match=r"^expected_trends: elements must be strings"):
        row.expected_trends.extend(["ok", 7])  # type: ignore[list-item]
    with pytest.raises(InvalidValueError, match=r"^expected_trends: .*NUL"):
        row.expected_trends[1:] = ["a\x00"]
    assert row.expected_trends == ["Y2K", "workwear"]


@pytest.mark.parametrize("text", ["\u00a020", "20\u00a0", "\u200920", "\u3000" + "20"])
def test_numbers_as_text_allow_only_ascii_spaces_around_them(text: str) -> None:
    with pytest.raises(InvalidValueError, match="must be a number in ASCII digits"):
        BrandGroup(brand="A", group_name="b", base_price=text)
    assert BrandGroup(brand="A", group_name="b", base_price=" 20\t").base_price == 20
