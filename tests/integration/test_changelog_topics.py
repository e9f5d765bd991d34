"""The worker creates its tables' changelog topics before faust starts, on a real broker.

faust declares them itself too, but a topic it has only just created can be missing from the
metadata of its first assignment, and the stage whose table it backs then never gets its
partitions. Created ahead, they are there from the start, with the settings faust would give.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from pipeline.localstack.kafka import free_port
from pipeline.settings import Settings
from pipeline.worker.app import create_app, declare_changelogs
from tests.integration.worker_harness import worker_settings

pytestmark = pytest.mark.integration


def test_changelog_topics_are_created_ahead_as_faust_declares_them(
    kafka_broker: str, unique: str, tmp_path: Path
) -> None:
    # The stream roles only: the sink's and the API's chDB is one path per test process.
    settings = worker_settings(kafka_broker, unique, tmp_path, worker_roles="identity,profile")
    app = create_app(settings)
    expected = {t.changelog_topic.get_topic_name(): t for t in app.tables.values()}
    assert f"cdp-worker-{unique}-cdp-profiles-changelog" in expected

    assert sorted(declare_changelogs(app, settings)) == sorted(expected)
    assert declare_changelogs(app, settings) == []  # idempotent: all present

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker, client_id="test-changelogs")
    try:
        described = {d["name"]: d for d in admin.describe_topics(list(expected))}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in expected]
        )
    finally:
        admin.close()
    for name, table in expected.items():
        partitions = table.partitions or settings.topic_partitions
        assert len(described[name]["partitions"]) == partitions, name
    policies = {name: c["cleanup.policy"]["value"] for name, c in configs["topic"].items()}
    assert policies == dict.fromkeys(expected, "compact")


def test_no_broker_yet_is_not_fatal(unique: str, tmp_path: Path) -> None:
    """With nothing listening, the worker goes on and faust declares the topics later."""
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        worker_id=f"cdp-worker-{unique}",
        data_dir=tmp_path,
        faust_store="memory://",
        worker_roles="identity,profile",
    )
    assert declare_changelogs(create_app(settings), settings) == []
