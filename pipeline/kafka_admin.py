"""Topic administration: create the pipeline's topics idempotently."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from pipeline import settings as s


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    replication: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


def pipeline_topics(settings: s.Settings) -> list[TopicSpec]:
    """The topics between the stages (see the README's data flow)."""
    rf = settings.topic_replication
    parts = settings.topic_partitions
    return [
        # Identity is a single writer (see README, "Scaling identity"): one partition keeps a
        # total order of identity decisions; batches of events per message carry the rate.
        TopicSpec(settings.topic(s.TOPIC_RAW), 1, rf, {"retention.ms": str(7 * 86400_000)}),
        TopicSpec(settings.topic(s.TOPIC_INVALID), 1, rf, {"retention.ms": str(14 * 86400_000)}),
        TopicSpec(settings.topic(s.TOPIC_RESOLVED), parts, rf),
        TopicSpec(settings.topic(s.TOPIC_IDENTITY_CHANGES), 1, rf),
        TopicSpec(
            settings.topic(s.TOPIC_PROFILE_CHANGES), parts, rf, {"cleanup.policy": "compact"}
        ),
    ]


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the missing topics; return the names created. Existing ones are left as they are."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cdp-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(t.name, t.partitions, t.replication, topic_configs=dict(t.config))
            for t in specs
            if t.name not in existing
        ]
        created: list[str] = []
        for new in wanted:
            try:
                admin.create_topics([new], timeout_ms=30_000)
                created.append(new.name)
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won; the topic is there either way
        return created
    finally:
        admin.close()
