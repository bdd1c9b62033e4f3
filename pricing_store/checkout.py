"""Whether the package runs from its project checkout, and how to migrate from where it runs."""

from __future__ import annotations

from pathlib import Path

# The project checkout this package runs from, when it runs from one (an editable install).
CHECKOUT = Path(__file__).resolve().parents[1]


def in_checkout() -> bool:
    """Whether the package runs from a checkout of its project (which has the Makefile)."""
    names = ("pyproject.toml", "alembic.ini", "Makefile")
    return all((CHECKOUT / name).is_file() for name in names)


def working_in_checkout() -> bool:
    """Whether the command runs in the checkout itself, where its `make` targets work."""
    return in_checkout() and Path.cwd().resolve() == CHECKOUT


def migrate_command() -> str:
    """The command that migrates where the user is: `make migrate` only in the checkout."""
    return "make migrate" if working_in_checkout() else "pricing-store migrate"
