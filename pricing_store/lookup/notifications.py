"""What the change triggers send, read without trusting it.

Triggers on both tables send a `pricing_store_changes` notification at the commit of any
statement that changed them, naming the changed keys (or none: "the whole table"). Any
role of the database can NOTIFY the channel too, so `parse_change` bounds what it reads.
"""

from __future__ import annotations

import json

from pricing_store.lookup.cache import BRAND_GROUPS, MODELS, Change

CHANNEL = "pricing_store_changes"
# Each table, with how many parts its notified keys have.
KEY_PARTS = {BRAND_GROUPS: 2, MODELS: 3}
# PostgreSQL's own limit on a payload; the triggers send at most 7,900 bytes.
MAX_PAYLOAD = 8000


def parse_change(payload: str) -> Change:
    """The table and keys a notification names; anything malformed means "everything".

    Any role of the database can NOTIFY the channel, so nothing is trusted: a payload that
    is too long, not JSON, of an unknown table or with keys of the wrong shape changes the
    whole table (or both), which is always safe.
    """
    if payload in KEY_PARTS:  # the oldest revision's trigger sends the table's name alone
        return payload, None
    if len(payload) > MAX_PAYLOAD:
        return None, None
    try:
        message = json.loads(payload)
        table, keys = message["t"], message["k"]
    except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: "[[[[...]]]]"
        return None, None
    if not isinstance(table, str) or table not in KEY_PARTS:
        return None, None
    parts = KEY_PARTS[table]
    if not isinstance(keys, list) or not all(
        isinstance(key, list) and len(key) == parts and all(isinstance(p, str) for p in key)
        for key in keys
    ):
        return table, None
    return table, [tuple(key) for key in keys]
