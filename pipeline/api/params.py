"""Request parameters of the profile API: parsing and validation (pure, no I/O).

Identifier values are normalized exactly as at ingestion (:func:`normalize_identifier` with the
same :class:`IdentityConfig`), so ``?email= Ann@Example.COM`` finds what the collector stored as
``ann@example.com`` and ``?phone=(415) 555-2671`` what it stored as ``+14155552671``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from pipeline.identity.config import IdentityConfig
from pipeline.identity.normalize import normalize_identifier

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000
# Customer ids are UUIDs today; the pattern is wider (imports may bring their own ids) but keeps
# out control characters, separators and anything long enough to be an abuse.
_CUSTOMER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")


class BadRequest(ValueError):
    """The request cannot be answered as asked (answered with 400 and this message)."""


def customer_id(raw: str) -> str:
    if not _CUSTOMER_ID.match(raw):
        raise BadRequest("customer_id must be 1-128 characters: letters, digits and ._:@+-")
    return raw


def limit(raw: str | None) -> int:
    """``?limit=``: default 50, an integer from 1 to 1000."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    # ASCII digits only (str.isdigit also takes "٣"), and short: int() of a huge string is slow.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def identifier(items: Iterable[tuple[str, str]], config: IdentityConfig) -> tuple[str, str]:
    """The one identifier of ``GET /v1/profiles?<type>=<value>``, normalized: (type, value).

    ``items`` are the query's (name, value) pairs, repeats included: ``?email=a&email=b`` is
    ambiguous and refused rather than silently answered for one of them.
    """
    pairs = list(items)
    types = config.types
    unknown = sorted({name for name, _ in pairs} - set(types))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown}; look up by one of {list(types)}")
    if len(pairs) != 1:
        raise BadRequest(f"give exactly one identifier, one of {list(types)}")
    id_type, raw = pairs[0]
    value = normalize_identifier(id_type, raw, config)
    if value is None:
        raise BadRequest(f"{id_type} is not a valid identifier (or is a blocked placeholder)")
    return id_type, value
