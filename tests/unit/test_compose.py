"""docker-compose.yml cannot be started here (no Docker engine), so check it is consistent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.settings import PROJECT_ROOT, Settings

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
LONG_RUNNING = {"kafka", "clickhouse", "worker", "api", "collector", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping"
    return {k: str(v) for k, v in env.items() if k != "<<"}


def test_all_services_present_with_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= LONG_RUNNING
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped"


def test_cdp_environment_names_are_settings(compose: dict[str, Any]) -> None:
    known = {f"CDP_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose["services"].items():
        for key in _env(service):
            if key.startswith("CDP_"):
                assert key in known, f"{name}: {key} is not a setting"


def test_production_requires_secrets(compose: dict[str, Any]) -> None:
    for service in ("worker", "api"):
        env = _env(compose["services"][service])
        assert env["CDP_ENV"] == "production"
        for secret in ("CDP_WRITE_KEYS", "CDP_API_TOKEN"):
            assert ":?" in env[secret], f"{secret} must be required (${{VAR:?message}})"


def test_worker_roles_cover_every_role_once(compose: dict[str, Any]) -> None:
    from pipeline.settings import WORKER_ROLES

    roles: list[str] = []
    for name in ("worker", "api"):
        value = _env(compose["services"][name])["CDP_WORKER_ROLES"]
        roles += Settings(worker_roles=value).worker_roles.split(",")
    assert sorted(roles) == sorted(WORKER_ROLES)


def test_ports_match_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    collector_env, worker_env = _env(services["collector"]), _env(services["api"])
    collector_port = int(collector_env["CDP_COLLECTOR_PORT"])
    api_port = int(worker_env["CDP_API_PORT"])
    assert collector_port == Settings.model_fields["collector_port"].default
    assert api_port == Settings.model_fields["api_port"].default
    assert any(str(p).endswith(f":{collector_port}") for p in services["collector"]["ports"])
    assert any(str(p) == f"127.0.0.1:{api_port}:{api_port}" for p in services["api"]["ports"])
    # Both listen on all interfaces inside their containers, or nothing could reach them.
    assert collector_env["CDP_COLLECTOR_HOST"] == "0.0.0.0"
    assert worker_env["CDP_API_HOST"] == "0.0.0.0"
    bootstrap = _env(services["worker"])["CDP_KAFKA_BOOTSTRAP"]
    assert bootstrap == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]


def test_prometheus_scrapes_the_pipeline(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((PROJECT_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert "collector:8080" in targets
    assert {"worker:8081", "api:8081"} <= targets


def test_volumes_and_build_files_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (PROJECT_ROOT / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
        build = service.get("build")
        if build:
            assert (PROJECT_ROOT / build["context"] / build["dockerfile"]).is_file()
    assert Path(PROJECT_ROOT / "deploy/Dockerfile").is_file()
