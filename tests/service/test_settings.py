"""Settings: YAML file, environment overrides, no default secrets, and the documented example stays valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, load_settings
from tests.support import ROOT

EXAMPLE = ROOT / "service" / "gateway.example.yaml"


def test_example_config_lists_every_key_and_loads() -> None:
    settings = load_settings(EXAMPLE)
    assert settings == Settings()  # the example documents the defaults
    text = EXAMPLE.read_text()
    for key in Settings.model_fields:
        assert f"{key}:" in text or key == "api_keys", key
    for section in ("limits", "queue"):
        for key in type(getattr(settings, section)).model_fields:
            assert f"  {key}:" in text, key


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("port: 9000\nlimits:\n  max_candidates: 4\n  max_chars: 100\n")
    monkeypatch.setenv("WEAVER_LIMITS__MAX_CANDIDATES", "8")
    monkeypatch.setenv("WEAVER_API_KEYS", "alpha, beta")
    settings = load_settings(config)
    assert settings.port == 9000 and settings.limits.max_candidates == 8 and settings.limits.max_chars == 100
    assert settings.resolved_api_keys() == ["alpha", "beta"]
    assert "alpha" not in repr(settings)  # keys are secrets: never printed
    assert load_settings(config, port=9100).port == 9100


def test_no_default_secrets_and_typos_are_rejected(tmp_path: Path) -> None:
    assert Settings().resolved_api_keys() == []
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits:\n  max_candidate: 3\n")
    with pytest.raises(ValidationError):
        load_settings(bad)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.yaml")
