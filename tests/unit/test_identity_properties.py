"""Property tests: the engine against a plain union-find, its invariants, and replay determinism."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity import IdentityConfig, IdentityEngine, Resolution
from pipeline.identity.config import BUILTIN_BLOCKED_VALUES

Identifier = tuple[str, str]
Event = tuple[list[Identifier], int]

TYPES = ("user_id", "email", "phone", "card", "anonymous_id")
PRIORITY = {t: i for i, t in enumerate(("user_id", "email", "phone", "card", "anonymous_id"))}
BLOCKED = ("null", "", "Guest", "[object Object]", "-1", "UNDEFINED")

UNLIMITED = IdentityConfig(
    custom_types=("card",),
    limits={t: 10**9 for t in ("user_id", "email", "phone", "anonymous_id")},
    custom_type_limit=10**9,
)
DEFAULTS = IdentityConfig(custom_types=("card",))
TIGHT = IdentityConfig(
    custom_types=("card",),
    limits={"user_id": 1, "email": 2, "phone": 1, "anonymous_id": 3},
    custom_type_limit=1,
)

values = st.one_of(st.sampled_from([f"v{i}" for i in range(8)]), st.sampled_from(BLOCKED))
identifiers = st.tuples(st.sampled_from(TYPES), values)
events = st.tuples(st.lists(identifiers, max_size=4), st.integers(0, 1_000))
logs = st.lists(events, max_size=40)

FAST = settings(max_examples=150, deadline=None)


def usable(identifier: Identifier) -> bool:
    return identifier[1].lower() not in BUILTIN_BLOCKED_VALUES


class UnionFind:
    """The reference: connected components of the identifier graph, nothing else."""

    def __init__(self) -> None:
        self.parent: dict[Identifier, Identifier] = {}

    def find(self, x: Identifier) -> Identifier:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            x = self.parent[x]
        return x

    def link(self, ids: list[Identifier]) -> None:
        roots = [self.find(x) for x in ids]
        for root in roots[1:]:
            self.parent[root] = roots[0]

    def components(self) -> set[frozenset[Identifier]]:
        groups: dict[Identifier, set[Identifier]] = {}
        for x in self.parent:
            groups.setdefault(self.find(x), set()).add(x)
        return {frozenset(g) for g in groups.values()}


def run(config: IdentityConfig, log: list[Event]) -> tuple[IdentityEngine, list[Resolution]]:
    engine = IdentityEngine(config)
    return engine, [engine.resolve(ids, at) for ids, at in log]


def engine_components(engine: IdentityEngine) -> set[frozenset[Identifier]]:
    groups: dict[str, set[Identifier]] = {}
    for key in engine.state.identifiers:
        id_type, value = key.split(":", 1)
        customer = engine.lookup(id_type, value)
        assert customer is not None
        groups.setdefault(customer, set()).add((id_type, value))
    return {frozenset(g) for g in groups.values()}


def reference_components(log: list[Event]) -> set[frozenset[Identifier]]:
    reference = UnionFind()
    for ids, _ in log:
        kept = [x for x in ids if usable(x)]
        if kept:
            reference.link(kept)
    return reference.components()


def check_invariants(engine: IdentityEngine, config: IdentityConfig) -> None:
    customers = engine.state.customers
    live = {cid: rec for cid, rec in customers.items() if "merged_into" not in rec}
    for cid, record in live.items():
        for id_type, stored in record["ids"].items():
            assert len(stored) <= config.limit(id_type), (cid, id_type, stored)
            assert len(set(stored)) == len(stored)
            for value in stored:
                assert usable((id_type, value))
                assert engine.state.identifiers[f"{id_type}:{value}"] == cid
        for loser in record.get("merged_from", []):
            assert customers[loser].get("merged_into") == cid
    for key, cid in engine.state.identifiers.items():
        id_type, value = key.split(":", 1)
        assert value in live[cid]["ids"][id_type]
    for cid, record in customers.items():
        if cid not in live:
            assert record.get("merged_into") in live  # one hop to a live customer
            assert record["ids"] == {}


def check_event(engine: IdentityEngine, ids: list[Identifier], result: Resolution) -> None:
    kept = [x for x in ids if usable(x)]
    if not kept:
        assert result.customer_id is None
        return
    top = min(kept, key=lambda x: PRIORITY[x[0]])  # stable: first of the best type
    assert engine.lookup(*top) == result.customer_id
    for refusal in result.refused:
        assert refusal.customer_id_kept != result.customer_id
        assert refusal.against_customer == result.customer_id
        assert engine.lookup(refusal.id_type, refusal.value) == refusal.customer_id_kept


@FAST
@given(log=logs, data=st.data())
def test_without_limit_conflicts_customers_are_connected_components(
    log: list[Event], data: st.DataObject
) -> None:
    expected = reference_components(log)
    shuffled = data.draw(st.permutations(log))
    for order in (log, shuffled):
        engine, results = run(UNLIMITED, order)
        assert engine_components(engine) == expected
        assert all(not r.refused for r in results)
        check_invariants(engine, UNLIMITED)


@FAST
@given(log=logs, data=st.data())
def test_first_seen_is_the_earliest_event_of_the_customer_in_any_order(
    log: list[Event], data: st.DataObject
) -> None:
    engine, _ = run(UNLIMITED, data.draw(st.permutations(log)))
    for component in reference_components(log):
        times = [at for ids, at in log if component.intersection(ids)]
        customer = engine.lookup(*next(iter(component)))
        assert engine.state.customers[customer or ""]["first_seen"] == min(times)


@FAST
@given(log=logs)
def test_every_identifier_of_an_event_answers_the_event_customer_when_unlimited(
    log: list[Event],
) -> None:
    engine = IdentityEngine(UNLIMITED)
    for ids, at in log:
        result = engine.resolve(ids, at)
        check_event(engine, ids, result)
        assert {engine.lookup(*x) for x in ids if usable(x)} <= {result.customer_id}


@FAST
@given(log=logs)
def test_limits_hold_and_the_event_follows_its_best_identifier(log: list[Event]) -> None:
    for config in (DEFAULTS, TIGHT):
        engine = IdentityEngine(config)
        for ids, at in log:
            check_event(engine, ids, engine.resolve(ids, at))
        check_invariants(engine, config)


@FAST
@given(log=logs)
def test_blocked_values_link_nothing(log: list[Event]) -> None:
    clean = [([x for x in ids if usable(x)], at) for ids, at in log]
    for config in (UNLIMITED, TIGHT):
        engine, results = run(config, log)
        clean_engine, clean_results = run(config, clean)
        assert [r._replace(skipped=()) for r in results] == clean_results
        assert engine.state == clean_engine.state
        assert all(usable(tuple(k.split(":", 1))) for k in engine.state.identifiers)  # type: ignore[arg-type]


@FAST
@given(log=logs)
def test_replaying_the_same_log_gives_identical_ids(log: list[Event]) -> None:
    first, first_results = run(TIGHT, log)
    second, second_results = run(TIGHT, log)
    assert first_results == second_results
    assert json.dumps(first.state.customers, sort_keys=True) == json.dumps(
        second.state.customers, sort_keys=True
    )
    assert first.state.identifiers == second.state.identifiers
