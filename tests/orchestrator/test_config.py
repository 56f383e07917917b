"""Orchestrator settings: the env names the Kubernetes manifests use, and the channel service config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from audiomemory.orchestrator.config import OrchestratorConfig


def test_targets_and_limits_come_from_audiomemory_orchestrator_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUDIOMEMORY_ORCHESTRATOR_GENERATOR_TARGET", "dns:///generator-headless:50051")
    monkeypatch.setenv("AUDIOMEMORY_ORCHESTRATOR_SEPARATOR_TARGET", "ipv4:127.0.0.1:1,127.0.0.1:2")
    monkeypatch.setenv("AUDIOMEMORY_ORCHESTRATOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("AUDIOMEMORY_ORCHESTRATOR_CACHE_MAX_BYTES", "1000")
    monkeypatch.setenv("AUDIOMEMORY_ORCHESTRATOR_STRENGTH", "0.25")
    config = OrchestratorConfig()
    assert config.targets()["generator"] == "dns:///generator-headless:50051"
    assert config.separator_target == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert (config.cache_dir, config.cache_max_bytes, config.strength) == (tmp_path, 1000, 0.25)


def test_defaults_follow_the_design() -> None:
    config = OrchestratorConfig()
    assert config.strength == 0.1 and config.projection_seed == 0
    assert config.max_upload_bytes == 256 * 1024 * 1024 and config.max_seconds == 20 * 60
    assert config.cache_max_bytes == 2 * 1024**3
    service_config = json.loads(config.service_config)
    assert service_config["loadBalancingConfig"] == [{"round_robin": {}}]
    retry = service_config["methodConfig"][0]["retryPolicy"]
    codes = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED", "FAILED_PRECONDITION"}
    assert set(retry["retryableStatusCodes"]) == codes


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="strength"):
        OrchestratorConfig(strength=1.5)
    with pytest.raises(ValidationError, match="service_config must be JSON"):
        OrchestratorConfig(service_config="{not json")
