"""Identity engine rules, one test per rule: events (lists of identifiers) in, customers out."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from pipeline.identity import (
    IdentityConfig,
    IdentityEngine,
    IdentityState,
    Merge,
    Refusal,
    normalize_identifier,
)
from pipeline.identity.config import DEFAULT_NAMESPACE

CONFIG = IdentityConfig()


def cid_of(id_type: str, value: str, namespace: uuid.UUID = DEFAULT_NAMESPACE) -> str:
    return str(uuid.uuid5(namespace, f"{id_type}:{value}"))


@pytest.fixture
def engine() -> IdentityEngine:
    return IdentityEngine(CONFIG)


# ---------------------------------------------------------------- linking


def test_first_identifier_founds_a_customer_with_a_deterministic_id(engine: IdentityEngine) -> None:
    result = engine.resolve([("anonymous_id", "a1")], 1_000)

    assert result.customer_id == cid_of("anonymous_id", "a1")
    assert result.new_identifiers == (("anonymous_id", "a1", result.customer_id),)
    assert (result.merges, result.refused, result.skipped) == ((), (), ())
    assert engine.lookup("anonymous_id", "a1") == result.customer_id


def test_new_customer_is_named_after_its_highest_priority_identifier(
    engine: IdentityEngine,
) -> None:
    result = engine.resolve([("anonymous_id", "a1"), ("email", "ann@x.io")], 1)
    assert result.customer_id == cid_of("email", "ann@x.io")


def test_all_identifiers_of_one_event_link(engine: IdentityEngine) -> None:
    event = [("anonymous_id", "a1"), ("user_id", "u1"), ("email", "ann@x.io"), ("phone", "+1")]
    customer = engine.resolve(event, 1).customer_id

    assert all(engine.lookup(t, v) == customer for t, v in event)
    assert engine.identifiers_of(customer or "") == {
        "user_id": ["u1"],
        "email": ["ann@x.io"],
        "phone": ["+1"],
        "anonymous_id": ["a1"],
    }


def test_known_identifiers_return_the_customer_without_changes(engine: IdentityEngine) -> None:
    first = engine.resolve([("anonymous_id", "a1"), ("user_id", "u1")], 1)
    again = engine.resolve([("user_id", "u1"), ("anonymous_id", "a1")], 2)

    assert again.customer_id == first.customer_id
    assert (again.new_identifiers, again.merges, again.refused, again.skipped) == ((), (), (), ())


def test_identifiers_seen_in_different_events_link_through_a_shared_one(
    engine: IdentityEngine,
) -> None:
    engine.resolve([("anonymous_id", "a1")], 1)
    engine.resolve([("anonymous_id", "a1"), ("user_id", "u1")], 2)
    engine.resolve([("user_id", "u1"), ("anonymous_id", "a2")], 3)  # second device logs in

    assert engine.lookup("anonymous_id", "a2") == engine.lookup("anonymous_id", "a1")


def test_segment_alias_is_just_linking(engine: IdentityEngine) -> None:
    # alias(previousId="old-crm-7", userId="u1") arrives as the identifiers of one event.
    engine.resolve([("user_id", "u1"), ("anonymous_id", "a1")], 1)
    result = engine.resolve([("user_id", "u1"), ("anonymous_id", "old-crm-7")], 2)
    assert engine.lookup("anonymous_id", "old-crm-7") == result.customer_id


def test_event_without_usable_identifier_has_no_customer(engine: IdentityEngine) -> None:
    result = engine.resolve([("anonymous_id", "null"), ("user_id", ""), ("fax", "123")], 1)

    assert result.customer_id is None
    assert result.skipped == (("anonymous_id", "null"), ("user_id", ""), ("fax", "123"))
    assert engine.resolve([], 1).customer_id is None
    assert engine.state.identifiers == {}
    assert engine.state.customers == {}


def test_duplicate_identifiers_in_one_event_count_once(engine: IdentityEngine) -> None:
    result = engine.resolve([("user_id", "u1"), ("user_id", "u1"), ("anonymous_id", "a1")], 1)
    assert result.refused == ()
    assert len(result.new_identifiers) == 2


def test_non_string_values_are_skipped_not_crashed_on(engine: IdentityEngine) -> None:
    engine.resolve([("user_id", "u1")], 1)
    untyped: list[Any] = [("user_id", "u1"), ("anonymous_id", None), ("email", 7)]
    result = engine.resolve(untyped, 2)
    assert result.customer_id == engine.lookup("user_id", "u1")
    assert list(result.skipped) == untyped[1:]


# ---------------------------------------------------------------- blocked values


def test_blocked_values_never_merge_two_people(engine: IdentityEngine) -> None:
    ann = engine.resolve([("user_id", "ann"), ("anonymous_id", "undefined")], 1)
    bob = engine.resolve([("user_id", "bob"), ("anonymous_id", "Undefined")], 2)
    eve = engine.resolve(
        [("email", "e@x.io"), ("phone", "0"), ("anonymous_id", "[object Object]")], 3
    )

    assert len({ann.customer_id, bob.customer_id, eve.customer_id}) == 3
    assert ann.skipped == (("anonymous_id", "undefined"),)
    assert engine.lookup("anonymous_id", "undefined") is None
    assert all(":" in key and "undefined" not in key.lower() for key in engine.state.identifiers)


def test_configured_block_list_and_regex_apply_in_the_engine() -> None:
    config = IdentityConfig(blocked_values=frozenset({"shared-kiosk"}), blocked_regex=r"qa-.*")
    engine = IdentityEngine(config)
    first = engine.resolve([("user_id", "u1"), ("anonymous_id", "SHARED-KIOSK")], 1)
    second = engine.resolve([("user_id", "u2"), ("anonymous_id", "shared-kiosk")], 2)
    third = engine.resolve([("user_id", "u3"), ("anonymous_id", "QA-device")], 3)

    assert len({first.customer_id, second.customer_id, third.customer_id}) == 3
    assert third.skipped == (("anonymous_id", "QA-device"),)


def test_a_value_blocked_after_it_was_stored_no_longer_links() -> None:
    state = IdentityState()
    IdentityEngine(CONFIG, state).resolve([("anonymous_id", "kiosk")], 1)
    stricter = IdentityEngine(IdentityConfig(blocked_values=frozenset({"kiosk"})), state)

    result = stricter.resolve([("anonymous_id", "kiosk")], 2)
    assert result.customer_id is None
    assert result.skipped == (("anonymous_id", "kiosk"),)


def test_phone_formats_resolve_to_one_customer_after_normalization(
    engine: IdentityEngine,
) -> None:
    def phone(raw: str) -> tuple[str, str]:
        value = normalize_identifier("phone", raw, CONFIG)
        assert value is not None
        return ("phone", value)

    first = engine.resolve([phone("(415) 555-2671"), ("anonymous_id", "a1")], 1)
    second = engine.resolve([phone("+1 415.555.2671"), ("anonymous_id", "a2")], 2)
    assert first.customer_id == second.customer_id
    assert engine.identifiers_of(first.customer_id or "")["phone"] == ["+14155552671"]


# ---------------------------------------------------------------- limits and priority


def test_shared_device_keeps_two_people_apart(engine: IdentityEngine) -> None:
    ann = engine.resolve([("anonymous_id", "family-ipad"), ("user_id", "ann")], 1)
    bob = engine.resolve([("anonymous_id", "family-ipad"), ("user_id", "bob")], 2)

    assert bob.customer_id != ann.customer_id
    assert bob.customer_id == cid_of("user_id", "bob")
    assert bob.refused == (
        Refusal(
            "anonymous_id",
            "family-ipad",
            ann.customer_id or "",
            "limit:user_id",
            bob.customer_id or "",
        ),
    )
    assert bob.merges == ()
    # The cookie stays with the first person; bob's customer only has bob.
    assert engine.lookup("anonymous_id", "family-ipad") == ann.customer_id
    assert engine.identifiers_of(bob.customer_id or "") == {"user_id": ["bob"]}
    # Later anonymous page views on the device still go to the first person.
    assert engine.resolve([("anonymous_id", "family-ipad")], 3).customer_id == ann.customer_id


def test_two_known_user_ids_in_one_event_do_not_merge(engine: IdentityEngine) -> None:
    ann = engine.resolve([("user_id", "ann"), ("anonymous_id", "a1")], 1).customer_id
    bob = engine.resolve([("user_id", "bob"), ("anonymous_id", "b1")], 2).customer_id

    result = engine.resolve([("anonymous_id", "b1"), ("anonymous_id", "a1")], 3)

    # Same priority: the first one listed wins the event; the other is refused.
    assert result.customer_id == bob
    assert result.refused == (Refusal("anonymous_id", "a1", ann or "", "limit:user_id", bob or ""),)
    assert engine.lookup("anonymous_id", "a1") == ann


def test_event_stays_with_the_customer_of_its_highest_priority_identifier(
    engine: IdentityEngine,
) -> None:
    ann = engine.resolve([("user_id", "ann"), ("anonymous_id", "a1")], 1).customer_id
    bob = engine.resolve([("user_id", "bob"), ("anonymous_id", "b1")], 2).customer_id

    # The cookie comes first in the event, but the email outranks it.
    engine.resolve([("email", "bob@x.io"), ("user_id", "bob")], 3)
    result = engine.resolve([("anonymous_id", "a1"), ("email", "bob@x.io")], 4)

    assert result.customer_id == bob
    assert result.refused[0].customer_id_kept == ann


def test_two_new_user_ids_in_one_event_become_two_customers(engine: IdentityEngine) -> None:
    result = engine.resolve([("user_id", "u1"), ("user_id", "u2"), ("anonymous_id", "a1")], 1)

    u1, u2 = cid_of("user_id", "u1"), cid_of("user_id", "u2")
    assert result.customer_id == u1
    assert set(result.new_identifiers) == {
        ("user_id", "u1", u1),
        ("anonymous_id", "a1", u1),
        ("user_id", "u2", u2),
    }
    assert result.refused == (Refusal("user_id", "u2", u2, "limit:user_id", u1),)


def test_new_identifiers_that_cannot_join_an_existing_customer_stay_together(
    engine: IdentityEngine,
) -> None:
    ann = engine.resolve([("user_id", "ann"), ("anonymous_id", "kiosk")], 1).customer_id

    result = engine.resolve(
        [("user_id", "bob"), ("email", "bob@x.io"), ("anonymous_id", "kiosk")], 2
    )

    assert result.customer_id == cid_of("user_id", "bob")
    assert engine.identifiers_of(result.customer_id) == {
        "user_id": ["bob"],
        "email": ["bob@x.io"],
    }
    assert engine.lookup("anonymous_id", "kiosk") == ann


def test_limit_per_type_refuses_one_identifier_too_many() -> None:
    engine = IdentityEngine(IdentityConfig(limits={"email": 2}))
    customer = engine.resolve([("user_id", "u1"), ("email", "e1@x.io")], 1).customer_id
    engine.resolve([("user_id", "u1"), ("email", "e2@x.io")], 2)

    result = engine.resolve([("user_id", "u1"), ("email", "e3@x.io")], 3)

    assert result.customer_id == customer
    e3 = cid_of("email", "e3@x.io")
    assert result.refused == (Refusal("email", "e3@x.io", e3, "limit:email", customer or ""),)
    assert result.new_identifiers == (("email", "e3@x.io", e3),)
    assert engine.identifiers_of(customer or "")["email"] == ["e1@x.io", "e2@x.io"]


def test_merge_refused_when_the_union_would_break_any_limit() -> None:
    engine = IdentityEngine(IdentityConfig(limits={"anonymous_id": 3}))
    left = engine.resolve([("anonymous_id", "a1"), ("anonymous_id", "a2")], 1).customer_id
    right = engine.resolve([("anonymous_id", "b1"), ("anonymous_id", "b2")], 2).customer_id

    result = engine.resolve([("anonymous_id", "a1"), ("anonymous_id", "b1")], 3)

    assert result.customer_id == left
    assert result.refused == (
        Refusal("anonymous_id", "b1", right or "", "limit:anonymous_id", left or ""),
    )
    assert engine.lookup("anonymous_id", "b2") == right


def test_refusal_names_the_highest_priority_broken_limit() -> None:
    engine = IdentityEngine(IdentityConfig(limits={"email": 1}))
    engine.resolve([("user_id", "ann"), ("email", "ann@x.io"), ("anonymous_id", "a")], 1)
    engine.resolve([("user_id", "bob"), ("email", "bob@x.io"), ("anonymous_id", "b")], 2)

    result = engine.resolve([("anonymous_id", "a"), ("anonymous_id", "b")], 3)
    assert [r.rule for r in result.refused] == ["limit:user_id"]


# ---------------------------------------------------------------- merges


def test_transitive_merges_answer_every_loser_id(engine: IdentityEngine) -> None:
    a = engine.resolve([("anonymous_id", "A")], 10).customer_id or ""
    b_new = engine.resolve([("anonymous_id", "A"), ("anonymous_id", "B")], 11)
    c = engine.resolve([("anonymous_id", "C")], 20).customer_id or ""
    engine.resolve([("anonymous_id", "C"), ("anonymous_id", "D")], 21)
    d_alone = engine.resolve([("email", "d@x.io")], 5).customer_id or ""
    engine.resolve([("email", "d@x.io"), ("anonymous_id", "D")], 22)  # d_alone absorbs C-D

    result = engine.resolve([("anonymous_id", "B"), ("anonymous_id", "C")], 30)

    assert b_new.customer_id == a
    # d_alone was first seen earliest (t=5), so it survives everything.
    assert result.customer_id == d_alone
    for loser in (a, c, d_alone):
        assert engine.resolve_customer(loser) == d_alone
    for value in "ABCD":
        assert engine.lookup("anonymous_id", value) == d_alone
    assert engine.merged_from(d_alone) == [c, a]
    assert engine.merged_from(a) == [c, a]  # a loser id denotes its survivor
    assert engine.identifiers_of(a) == {
        "email": ["d@x.io"],
        "anonymous_id": ["C", "D", "A", "B"],
    }
    (merge,) = result.merges
    assert merge == Merge(
        a, d_alone, ("anonymous_id", "C"), 30, (("anonymous_id", "A"), ("anonymous_id", "B"))
    )


def test_redirects_are_always_one_hop(engine: IdentityEngine) -> None:
    x = engine.resolve([("anonymous_id", "x")], 30).customer_id or ""
    y = engine.resolve([("anonymous_id", "y")], 20).customer_id or ""
    z = engine.resolve([("anonymous_id", "z")], 10).customer_id or ""
    engine.resolve([("anonymous_id", "x"), ("anonymous_id", "y")], 40)  # x -> y
    engine.resolve([("anonymous_id", "y"), ("anonymous_id", "z")], 41)  # y -> z

    customers = engine.state.customers
    assert customers[x].get("merged_into") == z
    assert customers[y].get("merged_into") == z
    assert engine.identifiers_of(x) == {"anonymous_id": ["z", "y", "x"]}
    assert customers[x]["ids"] == {}


def test_survivor_is_the_customer_first_seen_earliest(engine: IdentityEngine) -> None:
    late = engine.resolve([("anonymous_id", "late")], 2_000).customer_id
    early = engine.resolve([("anonymous_id", "early")], 1_000).customer_id  # arrives second

    result = engine.resolve([("anonymous_id", "late"), ("anonymous_id", "early")], 3_000)

    assert result.customer_id == early
    assert result.merges[0].loser == late
    assert engine.state.customers[early or ""]["first_seen"] == 1_000


def test_survivor_does_not_depend_on_the_order_within_the_event(engine: IdentityEngine) -> None:
    early = engine.resolve([("anonymous_id", "early")], 1_000).customer_id
    late = engine.resolve([("anonymous_id", "late")], 2_000).customer_id

    result = engine.resolve([("anonymous_id", "early"), ("anonymous_id", "late")], 3_000)

    assert result.merges[0].loser == late
    assert result.customer_id == early


def test_survivor_tie_goes_to_the_smaller_id() -> None:
    one, two = ("anonymous_id", "one"), ("anonymous_id", "two")
    for event in ([one, two], [two, one]):
        engine = IdentityEngine(CONFIG)
        first = engine.resolve([one], 1_000).customer_id or ""
        second = engine.resolve([two], 1_000).customer_id or ""
        assert engine.resolve(event, 2_000).customer_id == min(first, second)


def test_late_event_moves_first_seen_back_and_decides_the_survivor(
    engine: IdentityEngine,
) -> None:
    a = engine.resolve([("anonymous_id", "a")], 5_000).customer_id or ""
    b = engine.resolve([("anonymous_id", "b")], 4_000).customer_id or ""
    # An old event for "a" arrives late: fast path, but first_seen must still move back.
    late = engine.resolve([("anonymous_id", "a")], 1_000)
    assert late.new_identifiers == ()
    assert engine.state.customers[a]["first_seen"] == 1_000

    result = engine.resolve([("anonymous_id", "b"), ("anonymous_id", "a")], 6_000)
    assert result.customer_id == a
    assert result.merges[0].loser == b


def test_new_identifiers_joining_a_customer_with_a_late_event_do_not_merge(
    engine: IdentityEngine,
) -> None:
    existing = engine.resolve([("anonymous_id", "a")], 5_000).customer_id or ""
    result = engine.resolve([("user_id", "u1"), ("anonymous_id", "a")], 1_000)

    assert result.customer_id == existing
    assert result.merges == ()
    assert engine.state.customers[existing]["first_seen"] == 1_000


# ---------------------------------------------------------------- types and ids


def test_custom_types_rank_between_phone_and_anonymous_id() -> None:
    config = IdentityConfig(custom_types=("loyalty_card", "crm_id"), limits={"crm_id": 1})
    engine = IdentityEngine(config)
    card = engine.resolve([("anonymous_id", "a1"), ("loyalty_card", "L-1")], 1)
    assert card.customer_id == cid_of("loyalty_card", "L-1")
    engine.resolve([("crm_id", "c1"), ("anonymous_id", "a1")], 2)

    shared = engine.resolve([("anonymous_id", "a9"), ("crm_id", "c2"), ("loyalty_card", "L-1")], 3)

    # loyalty_card outranks crm_id: the event stays with the card's customer; crm_id limit is 1.
    assert shared.customer_id == card.customer_id
    assert [r.rule for r in shared.refused] == ["limit:crm_id"]
    assert engine.identifiers_of(card.customer_id or "") == {
        "loyalty_card": ["L-1"],
        "crm_id": ["c1"],
        "anonymous_id": ["a1", "a9"],
    }


def test_custom_type_default_limit_comes_from_config() -> None:
    engine = IdentityEngine(IdentityConfig(custom_types=("card",), custom_type_limit=2))
    result = engine.resolve([("card", "1"), ("card", "2"), ("card", "3")], 1)
    assert [r.value for r in result.refused] == ["3"]


def test_namespace_decides_ids() -> None:
    namespace = uuid.uuid4()
    engine = IdentityEngine(IdentityConfig(namespace=namespace))
    result = engine.resolve([("user_id", "ü-ñ")], 1)
    assert result.customer_id == cid_of("user_id", "ü-ñ", namespace)


def test_replaying_a_log_gives_identical_ids_and_state() -> None:
    log = [
        ([("anonymous_id", "a1")], 5),
        ([("anonymous_id", "a2"), ("user_id", "u1")], 3),
        ([("anonymous_id", "a1"), ("email", "e@x.io")], 9),
        ([("email", "e@x.io"), ("user_id", "u1")], 11),
        ([("anonymous_id", "a1"), ("user_id", "u2")], 12),
    ]
    runs = []
    for _ in range(2):
        engine = IdentityEngine(CONFIG)
        results = [engine.resolve(ids, at) for ids, at in log]
        runs.append(
            (results, json.dumps(engine.state.customers, sort_keys=True), engine.state.identifiers)
        )
    assert runs[0] == runs[1]


def test_taken_customer_id_gets_a_deterministic_suffix(engine: IdentityEngine) -> None:
    first = engine.resolve([("user_id", "u1")], 1).customer_id
    del engine.state.identifiers["user_id:u1"]  # e.g. an erased identifier, customer kept

    again = engine.resolve([("user_id", "u1")], 2).customer_id

    assert again == cid_of("user_id", "u1#1")
    assert again != first


def test_identifier_pointing_at_a_lost_record_is_recreated(engine: IdentityEngine) -> None:
    first = engine.resolve([("user_id", "u1")], 1).customer_id or ""
    del engine.state.customers[first]  # e.g. a half-restored store

    result = engine.resolve([("user_id", "u1"), ("anonymous_id", "a1")], 2)

    assert result.customer_id == first
    assert engine.identifiers_of(first) == {"user_id": ["u1"], "anonymous_id": ["a1"]}


def test_queries_for_unknown_ids() -> None:
    engine = IdentityEngine(CONFIG)
    assert engine.lookup("email", "nobody@x.io") is None
    assert engine.resolve_customer("no-such-customer") is None
    assert engine.identifiers_of("no-such-customer") == {}
    assert engine.merged_from("no-such-customer") == []


def test_redirect_cycle_is_reported_not_looped_forever(engine: IdentityEngine) -> None:
    engine.state.customers["x"] = {"first_seen": 1, "ids": {}, "merged_into": "y"}
    engine.state.customers["y"] = {"first_seen": 1, "ids": {}, "merged_into": "x"}
    with pytest.raises(RuntimeError, match="does not end"):
        engine.resolve_customer("x")


# ---------------------------------------------------------------- injected stores


class JsonStore(MutableMapping[str, Any]):
    """A store like a RocksDB-backed Faust table: values are serialized on write, and every read
    returns a fresh copy, so a change only persists if it is written back."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.writes = 0

    def __getitem__(self, key: str) -> Any:
        return json.loads(self.data[key])

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        self.data[key] = json.dumps(value)

    def __delitem__(self, key: str) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


LOG = [
    ([("anonymous_id", "a1")], 50),
    ([("anonymous_id", "a1"), ("user_id", "u1")], 60),
    ([("anonymous_id", "b1"), ("email", "b@x.io")], 40),
    ([("anonymous_id", "b1"), ("anonymous_id", "a1")], 70),
    ([("anonymous_id", "c1"), ("user_id", "u2")], 10),
    ([("anonymous_id", "c1"), ("email", "b@x.io")], 80),
    ([("anonymous_id", "a1")], 5),
    ([("anonymous_id", "d1"), ("phone", "+14155552671"), ("user_id", "u1")], 90),
]


def test_engine_over_a_serializing_store_matches_plain_dicts() -> None:
    plain = IdentityEngine(CONFIG)
    identifiers, customers = JsonStore(), JsonStore()
    stored = IdentityEngine(CONFIG, IdentityState(identifiers, customers))

    for ids, at in LOG:
        assert stored.resolve(ids, at) == plain.resolve(ids, at)

    assert {k: json.loads(v) for k, v in identifiers.data.items()} == plain.state.identifiers
    assert {k: json.loads(v) for k, v in customers.data.items()} == plain.state.customers


def test_state_is_json_ready(engine: IdentityEngine) -> None:
    for ids, at in LOG:
        engine.resolve(ids, at)
    customers = dict(engine.state.customers)
    assert json.loads(json.dumps(customers)) == customers


def test_known_events_write_nothing() -> None:
    identifiers, customers = JsonStore(), JsonStore()
    engine = IdentityEngine(CONFIG, IdentityState(identifiers, customers))
    engine.resolve([("anonymous_id", "a1"), ("user_id", "u1")], 10)
    id_writes, customer_writes = identifiers.writes, customers.writes

    engine.resolve([("anonymous_id", "a1"), ("user_id", "u1")], 20)
    assert (identifiers.writes, customers.writes) == (id_writes, customer_writes)

    engine.resolve([("user_id", "u1")], 5)  # only first_seen moves back: one record write
    assert (identifiers.writes, customers.writes) == (id_writes, customer_writes + 1)


def test_a_stale_identifier_entry_is_repaired(engine: IdentityEngine) -> None:
    loser = engine.resolve([("anonymous_id", "b")], 20).customer_id or ""
    survivor = engine.resolve([("anonymous_id", "a")], 10).customer_id or ""
    engine.resolve([("anonymous_id", "a"), ("anonymous_id", "b")], 30)
    engine.state.identifiers["anonymous_id:b"] = loser  # as if that write had been lost

    assert engine.lookup("anonymous_id", "b") == survivor
    assert engine.resolve([("anonymous_id", "b")], 40).customer_id == survivor
    assert engine.state.identifiers["anonymous_id:b"] == survivor
