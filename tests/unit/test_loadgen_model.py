"""The load generator's model: deterministic, consistent ground truth, the right mix of oddities."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.loadgen.model import ModelConfig, SimEvent, Simulation

CONFIG = ModelConfig(customers=300, events=6000, seed=7, end_ms=1_750_000_000_000)


def run(config: ModelConfig = CONFIG) -> tuple[Simulation, list[SimEvent]]:
    sim = Simulation(config)
    return sim, list(sim.events())


@pytest.fixture(scope="module")
def stream() -> tuple[Simulation, list[SimEvent]]:
    return run()


def test_same_seed_same_stream(stream: tuple[Simulation, list[SimEvent]]) -> None:
    _, events = stream
    _, again = run()
    assert again == events


def test_other_seed_other_people_and_stream(stream: tuple[Simulation, list[SimEvent]]) -> None:
    sim, events = stream
    other_sim, other = run(ModelConfig(customers=300, events=6000, seed=8, end_ms=CONFIG.end_ms))
    assert [e.message_id for e in other] != [e.message_id for e in events]
    emails = {p.email for p in sim.persons} - {None}
    assert not emails & ({p.email for p in other_sim.persons} - {None})


def test_exact_event_budget(stream: tuple[Simulation, list[SimEvent]]) -> None:
    assert len(stream[1]) == CONFIG.events


def test_message_ids_unique_except_duplicates(stream: tuple[Simulation, list[SimEvent]]) -> None:
    _, events = stream
    firsts = [e.message_id for e in events if not e.duplicate]
    assert len(firsts) == len(set(firsts))
    first_of = {e.message_id: e for e in events if not e.duplicate}
    for dup in (e for e in events if e.duplicate):
        # A duplicate is the same message (same person) resent, never a new one.
        assert first_of[dup.message_id].message == dup.message
        assert first_of[dup.message_id].person_id == dup.person_id


def test_truth_consistent_with_identifiers(stream: tuple[Simulation, list[SimEvent]]) -> None:
    sim, events = stream
    people = {p.person_id: p for p in sim.persons}
    for event in events:
        message = event.message
        if event.bot:
            assert message["anonymousId"] in sim.bots[event.person_id]
            continue
        person = people[event.person_id]
        if "userId" in message:
            assert message["userId"] == person.user_id
        if "anonymousId" in message and not event.shared_device:
            assert message["anonymousId"] in person.anonymous_ids
        for traits in (message.get("traits") or {}, message["context"].get("traits") or {}):
            if "email" in traits:
                assert traits["email"] == person.email
            if "phone" in traits:
                assert traits["phone"] == person.phone


def test_identifiers_belong_to_one_person(stream: tuple[Simulation, list[SimEvent]]) -> None:
    sim, _ = stream
    owners: Counter[tuple[str, str]] = Counter()
    for person in sim.persons:
        for kind in ("user_id", "email", "phone"):
            if (value := getattr(person, kind)) is not None:
                owners[(kind, value)] += 1
    assert owners and max(owners.values()) == 1


def test_proportions(stream: tuple[Simulation, list[SimEvent]]) -> None:
    _, events = stream
    n = len(events)
    share = {
        "duplicate": sum(e.duplicate for e in events) / n,
        "late": sum(e.late for e in events) / n,
        "bot": sum(e.bot for e in events) / n,
        "shared": sum(e.shared_device for e in events) / n,
        "pixel": sum(e.channel == "pixel" for e in events) / n,
    }
    assert 0.004 < share["duplicate"] < 0.02
    assert 0.01 < share["late"] < 0.04
    assert 0.01 < share["bot"] < 0.06
    assert 0.002 < share["shared"] < 0.1
    assert 0.005 < share["pixel"] < 0.05


def test_late_events_are_older_than_their_neighbours(
    stream: tuple[Simulation, list[SimEvent]],
) -> None:
    _, events = stream
    late = [i for i, e in enumerate(events) if e.late]
    assert late
    older = sum(
        events[i].message["timestamp"] < events[i - 1].message["timestamp"] for i in late if i
    )
    assert older / len(late) > 0.8


def test_shared_devices_have_two_users(stream: tuple[Simulation, list[SimEvent]]) -> None:
    _, events = stream
    users: dict[str, set[str]] = {}
    for e in events:
        if e.shared_device and "userId" in e.message:
            users.setdefault(e.message["anonymousId"], set()).add(e.message["userId"])
    assert any(len(u) == 2 for u in users.values())


def test_commerce_and_crawler_events(stream: tuple[Simulation, list[SimEvent]]) -> None:
    _, events = stream
    names = Counter(e.message.get("event") or e.message["type"] for e in events)
    for name in ("page", "identify", "Product Added", "Order Completed", "Email Opened"):
        assert names[name] > 0, name
    order = next(e.message for e in events if e.message.get("event") == "Order Completed")
    props = order["properties"]
    assert props["order_id"] and props["currency"] == "USD" and props["products"]
    assert props["revenue"] == round(sum(p["price"] * p["quantity"] for p in props["products"]), 2)
    bot_agents = {e.message["context"]["userAgent"] for e in events if e.bot}
    assert all("bot" in agent.lower() for agent in bot_agents)


def test_zipf_activity(stream: tuple[Simulation, list[SimEvent]]) -> None:
    sim, events = stream
    per_person = Counter(e.person_id for e in events if not e.bot)
    assert set(per_person) == {p.person_id for p in sim.persons}  # everyone shows up
    counts = sorted(per_person.values(), reverse=True)
    top_decile = sum(counts[: len(counts) // 10])
    assert top_decile / sum(counts) > 0.25  # heavy head, long tail


def test_timestamps_inside_history(stream: tuple[Simulation, list[SimEvent]]) -> None:
    from pipeline.loadgen.model import iso

    _, events = stream
    start = iso(CONFIG.end_ms - CONFIG.history_days * 86_400_000 - 7 * 86_400_000)
    assert all(start <= e.message["timestamp"] <= iso(CONFIG.end_ms) for e in events)
