"""Identity state as two flat key/value maps, so it can live in any MutableMapping.

The identity processor passes Faust tables (changelog-backed); tests pass plain dicts. Layout:

``identifiers``: ``"<type>:<value>"`` → ``customer_id`` (always the live survivor: merges rewrite
the loser's identifiers, so a lookup is one read).

``customers``: ``customer_id`` → :class:`CustomerRecord`, a JSON-ready dict::

    {"first_seen": 1700000000000,                 # earliest event time (ms) of this customer
     "ids": {"user_id": ["u1"], "anonymous_id": ["c1", "c2"]},
     "merged_from": ["<loser id>", ...]}          # only once something merged into it

and for a customer that lost a merge (kept so old ids keep answering)::

    {"first_seen": 1690000000000, "ids": {}, "merged_into": "<survivor id>"}

Writes per event: none when every identifier is known to one customer (one record write if the
event is older than the customer's ``first_seen``); a new identifier writes its key and its
customer's record; a merge rewrites the loser's identifiers (bounded by the per-type limits), the
loser's record (now a redirect), the survivor's record, and the redirects of customers that had
earlier merged into the loser (so every redirect stays one hop).

Records are only ever changed by writing the whole value back (``customers[cid] = record``):
stores such as Faust tables persist a change only on ``__setitem__``, never on in-place mutation.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict


class CustomerRecord(TypedDict):
    """The stored value for one customer id (see the module docstring)."""

    first_seen: int
    ids: dict[str, list[str]]
    merged_into: NotRequired[str]
    merged_from: NotRequired[list[str]]


@dataclass(slots=True)
class IdentityState:
    """The engine's whole state: identifier → customer, and customer → record."""

    identifiers: MutableMapping[str, str] = field(default_factory=dict)
    customers: MutableMapping[str, CustomerRecord] = field(default_factory=dict)


def identifier_key(id_type: str, value: str) -> str:
    """Key of an identifier in ``IdentityState.identifiers``.

    Type names cannot contain ``:`` (see IdentityConfig), so splitting on the first ``:`` gives
    the type back unambiguously.
    """
    return f"{id_type}:{value}"


class CustomerIdFactory:
    """Deterministic customer ids: ``str(uuid5(namespace, "<type>:<value>"))``.

    Computed with hashlib directly (same bytes as :func:`uuid.uuid5`) because building a
    ``uuid.UUID`` object per new customer costs several times more, and new customers are the
    common case while a log is first being read.
    """

    __slots__ = ("_prefix",)

    def __init__(self, namespace: uuid.UUID) -> None:
        # Prime the digest with the namespace once; copy() per id is cheaper than re-hashing.
        self._prefix = hashlib.sha1(namespace.bytes, usedforsecurity=False)

    def __call__(self, name: str) -> str:
        digest = self._prefix.copy()
        digest.update(name.encode("utf-8"))
        raw = bytearray(digest.digest()[:16])
        raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
