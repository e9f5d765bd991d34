"""Topic administration: create the pipeline's topics idempotently."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from mode.utils.times import want_seconds

from pipeline import settings as s

if TYPE_CHECKING:
    import faust


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


def changelog_topics(app: faust.App) -> list[TopicSpec]:
    """The changelog topics of ``app``'s tables, as faust would declare them on start.

    Created before the worker starts, they are in the broker's metadata by the time faust's
    first assignment looks for them: a changelog topic faust has only just created can be
    missing from that metadata ("Ignoring missing topic"), and the stage whose table it backs
    then never gets its partitions (seen with a fresh app id).
    """
    specs = []
    for table in app.tables.values():
        topic = table.changelog_topic
        config = {str(k): str(v) for k, v in (topic.config or {}).items()}
        # faust's own mapping (aiokafka transport, _prepare_compat_settings).
        flags = (("compact", topic.compacting), ("delete", topic.deleting))
        policy = [name for name, on in flags if on]
        if policy:
            config["cleanup.policy"] = ",".join(policy)
        if topic.retention:
            config["retention.ms"] = str(int(want_seconds(topic.retention) * 1000))
        specs.append(
            TopicSpec(
                topic.get_topic_name(),
                topic.partitions or app.conf.topic_partitions,
                topic.replicas or app.conf.topic_replication_factor,
                config,
            )
        )
    return specs


def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec], connect_timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics; return the names created. Existing ones are left as they are.

    Raises a ``KafkaError`` (``NoBrokersAvailable``) if no broker answers within
    ``connect_timeout_s`` (on kafka-python 3; 2.x waits its own time).
    """
    timeout: dict[str, int] = {}
    # kafka-python 3 bounds the first connection with this (30 s by default); 2.x, which the
    # dependency range still allows, has no such setting and refuses unknown ones.
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:
        timeout["bootstrap_timeout_ms"] = int(connect_timeout_s * 1000)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cdp-admin", **timeout)
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
