"""Value rules shared by every write and lookup path.

Each function takes the field name so that its `InvalidValueError` can say which field broke
which rule, and returns the canonical value to store.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from pricing_store.errors import InvalidValueError


@dataclass(frozen=True)
class DecimalRule:
    """A NUMERIC(precision, scale) column with an inclusive range."""

    precision: int
    scale: int
    minimum: Decimal
    maximum: Decimal

    # One unit of the last decimal place the column keeps (0.01 for a scale of 2); a field,
    # so reading it is an attribute read CPython specialises, as a cached_property's is not.
    quantum: Decimal = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantum", Decimal(1).scaleb(-self.scale))

    def check_sql(self, column: str) -> str:
        """Render the CHECK expression that enforces the range in the database."""
        return f"{column} >= {self.minimum} AND {column} <= {self.maximum}"

    def check(self, field: str, value: object) -> Decimal:
        """Validate a number against the column, returned at the column's scale.

        Raises:
            InvalidValueError: if the value is not a number, has more decimal places than
                the column keeps (it is never rounded) or lies outside the range.
        """
        number = to_decimal(field, value)
        # The range first: quantizing a number of any size (1e26 and up) raises.
        if not self.minimum <= number <= self.maximum:
            raise InvalidValueError(field, f"must be between {self.minimum} and {self.maximum}")
        scaled = number.quantize(self.quantum)
        if scaled != number:
            raise InvalidValueError(field, f"must have at most {self.scale} decimal places")
        return scaled


# A rule is a bound `check` method: a call as cheap as a function's, where a keyword
# bound by functools.partial would cost a dict merge per value of a bulk load.
@dataclass(frozen=True)
class KeyRule:
    """A key column: text of at most `max_length` characters once canonical."""

    max_length: int

    def check(self, field: str, value: object) -> str:
        """Trim and NFC-normalise a key, so the same text always finds the same row.

        Raises:
            InvalidValueError: if the value is not a string, is blank, holds a NUL
                character or a lone surrogate, or is longer than `max_length` characters
                once canonical.
        """
        if not isinstance(value, str):
            require_not_none(field, value)
            raise InvalidValueError(field, f"must be a string, not {type(value).__name__}")
        text = unicodedata.normalize("NFC", value.strip())
        if not text:
            raise InvalidValueError(field, "must not be empty or blank")
        if "\x00" in text:
            raise InvalidValueError(field, "must not contain a NUL character")
        if not (text.isascii() or is_utf8(text)):  # the common case without a call
            raise InvalidValueError(field, LONE_SURROGATE)
        if len(text) > self.max_length:
            raise InvalidValueError(
                field, f"must be at most {self.max_length} characters, got {len(text)}"
            )
        return text


BASE_PRICE = DecimalRule(10, 2, Decimal("5.00"), Decimal("500.00"))
CONDITION_SENSITIVITY = DecimalRule(3, 2, Decimal("0.5"), Decimal("1.5"))
COEFFICIENT = DecimalRule(4, 2, Decimal("0.5"), Decimal("3.0"))

LONE_SURROGATE = "must not contain a lone surrogate, which is not valid Unicode"
# A number given as text: ASCII digits, an optional sign and decimal point, nothing else
# (no exponent, no underscores, no other scripts' digits).
NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# What may surround such a number: ASCII white space only (not a no-break space).
ASCII_SPACE = " \t\n\r\x0b\x0c"
# PostgreSQL's bigint, the widest LIMIT and OFFSET it takes.
BIGINT_MAX = 2**63 - 1
# The most rows one page may ask for, and keys one get_many: a bound on one call's memory.
MAX_PAGE_SIZE = 100_000
MAX_KEYS_PER_CALL = 100_000
# Bounds of a JSONB list: generous for real data, and far below what PostgreSQL refuses.
MAX_LIST_ELEMENTS = 100
# What a list may be given as. A tuple of types, not `list | tuple`: written in a call,
# that union is built again on every call, which costs more than the check.
LIST_TYPES = (list, tuple)
MAX_ELEMENT_LENGTH = 200

BRAND_LENGTH = 100
GROUP_NAME_LENGTH = 50
MODEL_LENGTH = 100


def require_not_none(field: str, value: object) -> object:
    """Reject None, which no column of this package accepts."""
    if value is None:
        raise InvalidValueError(field, "must not be None")
    return value


def to_decimal(field: str, value: object) -> Decimal:
    """Turn an int, Decimal, numeric string or float (by its shortest repr) into a Decimal.

    Raises:
        InvalidValueError: for booleans, other types, text that is not a number, NaN and
            infinities.
    """
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        if isinstance(value, bool):
            raise InvalidValueError(field, "must be a number, not a boolean")
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValueError(field, "must be a finite number")
        # repr gives the shortest string that round-trips: 19.99, not 19.989999999999998...
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip(ASCII_SPACE)
        if not NUMBER_TEXT.fullmatch(text):
            shown = f"{text[:40]}..." if len(text) > 40 else text
            raise InvalidValueError(
                field, f"must be a number in ASCII digits (like 19.99), got {shown!r}"
            )
        number = Decimal(text)
    else:
        require_not_none(field, value)
        raise InvalidValueError(field, f"must be a number, not {type(value).__name__}")
    if not number.is_finite():
        raise InvalidValueError(field, "must be a finite number")
    return number


def string_list(field: str, value: object) -> list[str]:
    """Validate a JSONB array of strings.

    Raises:
        InvalidValueError: if the value is not a list or tuple, has more than
            MAX_LIST_ELEMENTS elements, or an element is not a non-empty, NUL-free string of
            at most MAX_ELEMENT_LENGTH characters.
    """
    if not isinstance(value, LIST_TYPES):
        require_not_none(field, value)
        raise InvalidValueError(field, f"must be a list of strings, not {type(value).__name__}")
    if len(value) > MAX_LIST_ELEMENTS:
        list_length(field, len(value))
    # Bulk loads validate millions of elements: one inline test each (no call for ASCII
    # text), and the rule's own message only for an element that fails it.
    for element in value:
        if (
            not isinstance(element, str)
            or len(element) > MAX_ELEMENT_LENGTH
            or not element.strip()
            or "\x00" in element
            or not (element.isascii() or is_utf8(element))
        ):
            string_element(field, element)
    return list(value)


def string_element(field: str, element: object) -> str:
    """Validate one element of a JSONB array of strings.

    Raises:
        InvalidValueError: if the element is not a non-empty, NUL-free string of valid
            Unicode.
    """
    if not isinstance(element, str):
        raise InvalidValueError(field, f"elements must be strings, got {type(element).__name__}")
    if len(element) > MAX_ELEMENT_LENGTH:
        raise InvalidValueError(
            field, f"elements must be at most {MAX_ELEMENT_LENGTH} characters, got {len(element)}"
        )
    if not element.strip():
        raise InvalidValueError(field, "elements must not be empty or blank")
    if "\x00" in element:
        raise InvalidValueError(field, "elements must not contain a NUL character")
    if not is_utf8(element):
        raise InvalidValueError(field, f"elements {LONE_SURROGATE}")
    return element


def is_utf8(text: str) -> bool:
    r"""Whether the text can be stored: PostgreSQL takes UTF-8, which has no lone surrogates.

    Half an emoji escaped in an LLM's JSON (`"\ud83d"`) decodes to one.
    """
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def string_elements(field: str, elements: Iterable[object], *, joining: int = 0) -> list[str]:
    """Validate several elements about to join a JSONB array of `joining` strings.

    Raises:
        InvalidValueError: if an element is invalid or the list would grow too long.
    """
    checked = [string_element(field, element) for element in elements]
    list_length(field, joining + len(checked))
    return checked


def list_length(field: str, length: int) -> None:
    """Reject a list longer than MAX_LIST_ELEMENTS.

    Raises:
        InvalidValueError: naming the field and the limit.
    """
    if length > MAX_LIST_ELEMENTS:
        raise InvalidValueError(
            field, f"must have at most {MAX_LIST_ELEMENTS} elements, got {length}"
        )


def whole_number(field: str, value: object, *, minimum: int = 0, maximum: int = BIGINT_MAX) -> int:
    """Validate a count, size, limit or offset: an int from `minimum` to `maximum`.

    Raises:
        InvalidValueError: if the value is not an int (bool is not one) or is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValueError(field, f"must be an integer, not {type(value).__name__}")
    if value < minimum:
        rule = "must not be negative" if minimum == 0 else f"must be at least {minimum}"
        raise InvalidValueError(field, f"{rule}, got {value}")
    if value > maximum:
        raise InvalidValueError(field, f"must be at most {maximum}, got {value}")
    return value


def positive_seconds(
    field: str, value: object, *, least: float = 0.0, most: float = 3600.0
) -> float:
    """Validate a duration in seconds: above zero, at least `least` and at most `most`.

    Raises:
        InvalidValueError: if the value is not a finite number in that range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValueError(field, f"must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidValueError(field, f"must be a positive number of seconds, got {value!r}")
    if not least <= value <= most:
        raise InvalidValueError(field, f"must be from {least:g} to {most:g} seconds, got {value!r}")
    return float(value)
