"""The identity engine: identifiers seen together → one customer, under limits and priorities.

``resolve(identifiers, event_time_ms)`` is a pure state transition in the spirit of bytewax's
``stateful_map``: it reads and writes only the injected :class:`IdentityState` and returns what
changed. Rules (DESIGN.md, "Identity resolution"):

* every usable identifier of one event is linked; a customer is a connected group;
* blocked values and unknown types never link (they are reported in ``Resolution.skipped``);
* per-type limits with priority ``user_id > email > phone > custom > anonymous_id``: identifiers
  are linked in priority order; a link that would push any type of the group past its limit is
  refused (and reported), the refused identifier keeps its own customer, and the event stays with
  the customer of its highest-priority identifier;
* on a merge the survivor is the customer first seen earliest (ties: smaller id); the loser's
  identifiers move to the survivor and the loser's id redirects to it;
* ids are ``uuid5(namespace, "<type>:<value>")`` of the identifier that created the customer, so
  replaying a log gives the same ids.

Segment semantics come for free: ``identify`` passes ``anonymousId`` + ``userId`` (+ traits.email,
traits.phone), ``alias`` passes ``previousId`` + ``userId`` as identifiers of one event; linking
them is exactly what alias/identify mean, so there is no separate alias operation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import NamedTuple

from pipeline.identity.config import IdentityConfig
from pipeline.identity.state import (
    CustomerIdFactory,
    CustomerRecord,
    IdentityState,
    identifier_key,
)

Identifier = tuple[str, str]

_tuple_new = tuple.__new__

# Guards against a corrupted redirect cycle; real chains are one hop (merges compress them).
_MAX_REDIRECT_HOPS = 64


class Merge(NamedTuple):
    """``loser`` folded into ``survivor`` because ``identifier`` linked them at ``at_ms``."""

    loser: str
    survivor: str
    identifier: Identifier
    at_ms: int
    moved: tuple[Identifier, ...]  # the loser's identifiers, now the survivor's


class Refusal(NamedTuple):
    """A link refused by a limit: the identifier stays with ``customer_id_kept``."""

    id_type: str
    value: str
    customer_id_kept: str
    rule: str  # "limit:<type>": the type whose limit the link would have broken
    against_customer: str  # the event's customer, which did not get the identifier


class Resolution(NamedTuple):
    """Outcome of one event. ``customer_id`` is None when no identifier was usable."""

    customer_id: str | None
    new_identifiers: tuple[tuple[str, str, str], ...]  # (type, value, customer_id)
    merges: tuple[Merge, ...]
    refused: tuple[Refusal, ...]
    skipped: tuple[Identifier, ...]  # blocked or of an unknown type


class IdentityEngine:
    """Resolves events' identifiers to customer ids over a dict-like :class:`IdentityState`.

    Identifiers must already be normalized (see ``normalize_identifier``); the engine still skips
    blocked values and unknown types defensively. Not thread-safe: one engine per partition.
    """

    __slots__ = (
        "_blocked",
        "_blocked_max_len",
        "_customers",
        "_default_limit",
        "_hot",
        "_ids",
        "_limits",
        "_make_id",
        "_max_length",
        "_pattern",
        "_rank",
        "config",
        "state",
    )

    def __init__(self, config: IdentityConfig, state: IdentityState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else IdentityState()
        self._ids: MutableMapping[str, str] = self.state.identifiers
        self._customers: MutableMapping[str, CustomerRecord] = self.state.customers
        # Plain dicts/sets copied out of the config: attribute and mapping-proxy lookups are
        # measurable at 200k events/s.
        self._limits: dict[str, int] = dict(config.limit_by_type)
        self._default_limit = config.custom_type_limit
        self._rank: dict[str, int] = dict(config.rank)
        self._blocked = config.blocked_lower
        # Values longer than every blocked word cannot be blocked: skip lower() for them.
        self._blocked_max_len = max(map(len, config.blocked_lower))
        self._pattern = config.blocked_pattern
        self._max_length = config.max_length
        self._make_id = CustomerIdFactory(config.namespace)
        # Everything the fast path reads, unpacked in one step per call.
        self._hot = (
            {t: identifier_key(t, "") for t in config.priority},
            self._ids.get,
            self._customers,
            self._blocked,
            self._blocked_max_len,
            self._pattern,
        )

    # ------------------------------------------------------------------ resolve

    def resolve(self, identifiers: Sequence[Identifier], event_time_ms: int) -> Resolution:
        """Link the identifiers of one event and return its customer and what changed."""
        # Fast path: every identifier known and already on the same live customer (the common
        # case for a returning visitor). No allocation besides the result.
        prefixes, ids_get, customers, blocked, blocked_max_len, pattern = self._hot
        cid: str | None = None
        try:
            for id_type, value in identifiers:
                prefix = prefixes.get(id_type)  # None: a type the config does not know
                if (
                    prefix is None
                    or (len(value) <= blocked_max_len and value.lower() in blocked)
                    or (pattern is not None and pattern.fullmatch(value) is not None)
                ):
                    break
                found = ids_get(prefix + value)
                if found is None or (cid is not None and found != cid):
                    break
                cid = found
            else:
                if cid is not None:
                    record = customers.get(cid)
                    if record is not None and "merged_into" not in record:
                        if event_time_ms < record["first_seen"]:
                            record["first_seen"] = event_time_ms
                            customers[cid] = record
                        # tuple.__new__ skips NamedTuple's Python-level __new__ (2x cheaper).
                        return _tuple_new(Resolution, (cid, (), (), (), ()))
        except (TypeError, AttributeError):
            pass  # a non-string value slipped through: the slow path skips it properly
        return self._resolve_slow(identifiers, event_time_ms)

    def _usable(self, id_type: str, value: object) -> bool:
        if id_type not in self._limits or not isinstance(value, str):
            return False
        size = len(value)
        if size == 0 or size > self._max_length:
            return False
        if size <= self._blocked_max_len and value.strip().lower() in self._blocked:
            return False
        return self._pattern is None or self._pattern.fullmatch(value) is None

    def _resolve_slow(self, identifiers: Sequence[Identifier], at: int) -> Resolution:
        """Greedy linking in priority order.

        The group starts as the customer of the highest-priority identifier (or, while that one
        is new, as a not-yet-created customer of the new identifiers). Each further identifier
        joins it, or brings its whole customer in by a merge, only if no limit breaks; otherwise
        it is refused and stays where it is. Without limits this is plain union, so the result
        is the connected components whatever the order.
        """
        ordered, skipped = self._prepare(identifiers)
        if not ordered:
            return Resolution(None, (), (), (), tuple(skipped))

        group: str | None = None  # the event's customer so far; None while only new ids
        pending: list[Identifier] = []  # new ids waiting for the group to exist
        pending_counts: dict[str, int] = {}
        attached: list[Identifier] = []  # new ids linked to the group
        elsewhere: list[tuple[str, str, str]] = []  # new ids refused: their own new customer
        refused: list[tuple[str, str, str, str]] = []  # (type, value, kept, rule)
        merges: list[Merge] = []

        for id_type, value in ordered:
            key = identifier_key(id_type, value)
            found = self._ids.get(key)
            owner = None if found is None else self.resolve_customer(found)
            if owner is not None and owner != found:
                # A stale entry (e.g. a crash between the writes of a merge): repair it.
                self._ids[key] = owner
            if owner is None:  # new identifier (or one whose record was lost: re-create it)
                limit = self._limits[id_type]
                if group is None:
                    if pending_counts.get(id_type, 0) < limit:
                        pending.append((id_type, value))
                        pending_counts[id_type] = pending_counts.get(id_type, 0) + 1
                        continue
                else:
                    record = self._customers[group]
                    if len(record["ids"].get(id_type, ())) < limit:
                        self._attach(group, record, ((id_type, value),))
                        attached.append((id_type, value))
                        continue
                own = self._create(id_type, value, at)
                elsewhere.append((id_type, value, own))
                refused.append((id_type, value, own, f"limit:{id_type}"))
            elif owner == group:
                continue
            elif group is None:
                record = self._customers[owner]
                broken = self._broken_limit(record["ids"], pending_counts.items())
                if broken is None:
                    # The new ids join an existing customer: no merge, nothing existed yet.
                    group = owner
                    self._attach(owner, record, pending)
                    attached.extend(pending)
                    pending.clear()
                else:
                    refused.append((id_type, value, owner, f"limit:{broken}"))
            else:
                ours, theirs = self._customers[group], self._customers[owner]
                counts = ((t, len(vs)) for t, vs in theirs["ids"].items())
                broken = self._broken_limit(ours["ids"], counts)
                if broken is None:
                    merge = self._merge(group, ours, owner, theirs, (id_type, value), at)
                    merges.append(merge)
                    group = merge.survivor
                else:
                    refused.append((id_type, value, owner, f"limit:{broken}"))

        if group is None:
            # Only new identifiers linked: they found a customer named after the first of them,
            # the highest-priority one.
            first_type, first_value = pending[0]
            group = self._create(first_type, first_value, at)
            self._attach(group, self._customers[group], pending[1:])
            attached.extend(pending)
        else:
            record = self._customers[group]
            if at < record["first_seen"]:
                record["first_seen"] = at
                self._customers[group] = record

        new_ids = tuple((t, v, group) for t, v in attached) + tuple(elsewhere)
        refusals = tuple(Refusal(t, v, kept, rule, group) for t, v, kept, rule in refused)
        return Resolution(group, new_ids, tuple(merges), refusals, tuple(skipped))

    def _prepare(
        self, identifiers: Sequence[Identifier]
    ) -> tuple[list[Identifier], list[Identifier]]:
        """Usable identifiers, deduplicated, highest priority first (stable within a type)."""
        usable: list[Identifier] = []
        skipped: list[Identifier] = []
        is_usable = self._usable
        for item in identifiers:
            if not is_usable(*item):
                skipped.append(item)
            elif item not in usable:  # events carry a handful of ids: a list beats a set
                usable.append(item)
        if len(usable) > 1:
            rank = self._rank
            usable.sort(key=lambda item: rank[item[0]])
        return usable, skipped

    def _broken_limit(
        self, ids: Mapping[str, list[str]], adding: Iterable[tuple[str, int]]
    ) -> str | None:
        """The highest-priority type whose limit ``ids`` plus ``adding`` would exceed, if any."""
        broken: str | None = None
        worst_rank = len(self._rank)
        for id_type, count in adding:
            if count + len(ids.get(id_type, ())) > self._limits.get(id_type, self._default_limit):
                rank = self._rank.get(id_type, len(self._rank))
                if broken is None or rank < worst_rank:
                    broken, worst_rank = id_type, rank
        return broken

    # ------------------------------------------------------------------ writes

    def _create(self, id_type: str, value: str, at: int) -> str:
        """A new customer holding one identifier, named after it."""
        key = identifier_key(id_type, value)
        cid = self._make_id(key)
        suffix = 1
        # Only if the name was taken (e.g. the identifier was erased but its customer kept):
        # a deterministic suffix keeps replays identical.
        while cid in self._customers:
            cid = self._make_id(f"{key}#{suffix}")
            suffix += 1
        self._customers[cid] = {"first_seen": at, "ids": {id_type: [value]}}
        self._ids[key] = cid
        return cid

    def _attach(self, cid: str, record: CustomerRecord, new: Sequence[Identifier]) -> None:
        if not new:
            return
        ids = record["ids"]
        for id_type, value in new:
            values = ids.get(id_type)
            if values is None:
                ids[id_type] = [value]
            else:
                values.append(value)
            self._ids[identifier_key(id_type, value)] = cid
        self._customers[cid] = record

    def _merge(
        self,
        a: str,
        record_a: CustomerRecord,
        b: str,
        record_b: CustomerRecord,
        via: Identifier,
        at: int,
    ) -> Merge:
        if (record_b["first_seen"], b) < (record_a["first_seen"], a):
            survivor, kept, loser, gone = b, record_b, a, record_a
        else:
            survivor, kept, loser, gone = a, record_a, b, record_b
        moved: list[Identifier] = []
        kept_ids = kept["ids"]
        for id_type, values in gone["ids"].items():
            for value in values:
                self._ids[identifier_key(id_type, value)] = survivor
                moved.append((id_type, value))
            if id_type in kept_ids:
                kept_ids[id_type].extend(values)
            else:
                kept_ids[id_type] = list(values)
        kept["first_seen"] = min(kept["first_seen"], gone["first_seen"])
        # Path compression: customers that earlier merged into the loser now point straight at
        # the survivor, so every redirect is a single hop.
        earlier = gone.get("merged_from", [])
        for old in earlier:
            redirect = self._customers[old]
            redirect["merged_into"] = survivor
            self._customers[old] = redirect
        kept.setdefault("merged_from", []).extend([loser, *earlier])
        self._customers[loser] = {
            "first_seen": gone["first_seen"],
            "ids": {},
            "merged_into": survivor,
        }
        self._customers[survivor] = kept
        return Merge(loser, survivor, via, at, tuple(moved))

    # ------------------------------------------------------------------ queries

    def lookup(self, id_type: str, value: str) -> str | None:
        """The live customer holding a (normalized) identifier, or None."""
        found = self._ids.get(identifier_key(id_type, value))
        return None if found is None else self.resolve_customer(found)

    def resolve_customer(self, customer_id: str) -> str | None:
        """The final survivor for any customer id ever issued; None for an unknown id."""
        cid = customer_id
        for _ in range(_MAX_REDIRECT_HOPS):
            record = self._customers.get(cid)
            if record is None:
                return None
            target = record.get("merged_into")
            if target is None:
                return cid
            cid = target
        raise RuntimeError(f"customer redirect chain from {customer_id!r} does not end")

    def identifiers_of(self, customer_id: str) -> dict[str, list[str]]:
        """Identifiers of the customer an id denotes now (after merges), in priority order."""
        live = self.resolve_customer(customer_id)
        if live is None:
            return {}
        ids = self._customers[live]["ids"]
        ordered = sorted(ids, key=lambda t: self._rank.get(t, len(self._rank)))
        return {t: list(ids[t]) for t in ordered if ids[t]}

    def merged_from(self, customer_id: str) -> list[str]:
        """Every customer id folded (directly or transitively) into the customer an id denotes."""
        live = self.resolve_customer(customer_id)
        if live is None:
            return []
        return list(self._customers[live].get("merged_from", []))
