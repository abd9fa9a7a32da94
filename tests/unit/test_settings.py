from __future__ import annotations

import pytest

from ridehail.common.settings import CommonSettings, SettingsError, load_settings, unknown_settings


def test_defaults_are_the_documented_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("RIDEHAIL_"):
            monkeypatch.delenv(key)
    s = load_settings(CommonSettings)
    assert (s.gateway_port, s.auth_port, s.broker_port) == (8000, 8001, 9092)
    assert s.bootstrap == "127.0.0.1:9092"
    assert s.auth_url == "http://127.0.0.1:8001"


def test_unknown_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDEHAIL_GATEWAY_PROT", "9000")
    with pytest.raises(SettingsError) as err:
        load_settings(CommonSettings)
    assert "RIDEHAIL_GATEWAY_PROT" in str(err.value)
    assert "RIDEHAIL_GATEWAY_PROT" in unknown_settings()


def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDEHAIL_GATEWAY_PORT", "not-a-port")
    with pytest.raises(SettingsError) as err:
        load_settings(CommonSettings)
    assert "RIDEHAIL_GATEWAY_PORT" in str(err.value)


def test_database_url_gets_the_async_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDEHAIL_DATABASE_URL", "postgresql://u@h:5432/db")
    assert load_settings(CommonSettings).database_url == "postgresql+asyncpg://u@h:5432/db"
    monkeypatch.setenv("RIDEHAIL_DATABASE_URL", "mysql://u@h/db")
    with pytest.raises(SettingsError, match="RIDEHAIL_DATABASE_URL"):
        load_settings(CommonSettings)


def test_kafka_bootstrap_overrides_the_embedded_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDEHAIL_KAFKA_BOOTSTRAP", "kafka:9092")
    assert load_settings(CommonSettings).bootstrap == "kafka:9092"
