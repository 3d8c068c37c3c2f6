"""Provider settings: env names, defaults from the reference, explicit mappings, validation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from providers.replicate import ReplicateSettings
from providers.settings import ProviderSettings
from providers.stability import StabilitySettings
from providers.suno import SunoSettings


def _error_fields(exc: ValidationError) -> set[str]:
    return {str(err["loc"][0]) for err in exc.errors()}


def test_defaults_follow_the_reference_schedule() -> None:
    replicate = ReplicateSettings.from_env({})
    assert replicate.base_url == "https://api.replicate.com"
    assert replicate.poll_interval_ms("image") == 1_000
    assert replicate.poll_interval_ms("video") == 5_000
    assert replicate.timeout_ms("video") == 1_200_000
    stability = StabilitySettings.from_env({})
    assert stability.base_url == "https://api.stability.ai"
    assert stability.timeout_ms("image") == 300_000
    assert stability.poll_interval_ms("video") == 10_000
    suno = SunoSettings.from_env({})
    assert suno.base_url == "https://api.sunoapi.org"
    assert suno.poll_interval_ms("audio") == 10_000
    assert suno.timeout_ms("audio") == 600_000


def test_rate_budgets_stay_under_each_documented_limit() -> None:
    # Replicate 3000/min; Stability 150 per 10 s; Suno ~20 per 10 s (burst + 10 s of refill).
    replicate = ReplicateSettings.from_env({})
    assert replicate.rate_per_s * 60 <= 0.85 * 3000
    # ... and 600 prediction creates a minute, which its submits draw on besides.
    assert replicate.submit_rate_per_s is not None
    assert replicate.submit_rate_per_s * 60 <= 0.85 * 600
    stability = StabilitySettings.from_env({})
    assert stability.burst + stability.rate_per_s * 10 < 150
    suno = SunoSettings.from_env({})
    assert suno.burst + suno.rate_per_s * 10 < 20


def test_env_names_use_the_provider_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_fromenv")
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL_IMAGE_MS", "750")
    monkeypatch.setenv("REPLICATE_BASE_URL", "http://127.0.0.1:9000/")
    monkeypatch.setenv("REPLICATE_HARDWARE_PRICES", '{"gpu-x": 0.001}')
    settings = ReplicateSettings()
    assert settings.api_key_value() == "r8_fromenv"
    assert settings.poll_interval_ms("image") == 750
    assert settings.base_url == "http://127.0.0.1:9000"  # trailing slash dropped
    assert settings.hardware_prices == {"gpu-x": Decimal("0.001")}
    assert settings.configured


def test_stability_and_suno_keys_use_their_documented_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STABILITY_API_KEY", "sk-env")
    monkeypatch.setenv("SUNO_API_KEY", "suno-env")
    monkeypatch.setenv("SUNO_CALLBACK_URL", "https://hooks.example/suno?token=abc")
    assert StabilitySettings().api_key_value() == "sk-env"
    suno = SunoSettings()
    assert suno.api_key_value() == "suno-env"
    assert suno.callback_url is not None
    assert suno.callback_url.get_secret_value() == "https://hooks.example/suno?token=abc"


def test_from_env_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_process")
    settings = ReplicateSettings.from_env({"REPLICATE_READ_TIMEOUT_S": "12.5"})
    assert settings.api_key is None
    assert not settings.configured
    assert settings.read_timeout_s == 12.5


def test_keyword_values_work_by_field_name_and_by_env_name() -> None:
    by_field = ReplicateSettings.from_env({}, api_key="r8_a", rate_per_s=5)
    by_alias = ReplicateSettings.from_env({}, REPLICATE_API_TOKEN="r8_b")
    assert by_field.api_key_value() == "r8_a"
    assert by_field.rate_per_s == 5.0
    assert by_alias.api_key_value() == "r8_b"
    validated = StabilitySettings.model_validate({"api_key": "sk-x", "burst": 3})
    assert validated.burst == 3


def test_settings_are_frozen() -> None:
    settings = StabilitySettings.from_env({})
    with pytest.raises(ValidationError):
        settings.burst = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"REPLICATE_POLL_INTERVAL_VIDEO_MS": "0"}, "poll_interval_video_ms"),
        ({"REPLICATE_CONNECT_TIMEOUT_S": "-1"}, "connect_timeout_s"),
        ({"REPLICATE_RATE_PER_S": "fast"}, "rate_per_s"),
        ({"REPLICATE_BASE_URL": "ftp://example.com"}, "base_url"),
        ({"REPLICATE_BASE_URL": "https://x.example/?a=1"}, "base_url"),
        ({"REPLICATE_HARDWARE_PRICES": "{not json"}, "hardware_prices"),
        ({"REPLICATE_MODEL_PRICES": '{"a/b": -1}'}, "model_prices"),
        ({"REPLICATE_MODEL_HARDWARE": '{"a/b": "gpu-unknown"}'}, "model_hardware"),
        ({"REPLICATE_DEFAULT_HARDWARE": "gpu-unknown"}, "default_hardware"),
        ({"REPLICATE_MAX_IN_FLIGHT": "0"}, "max_in_flight"),
    ],
)
def test_invalid_values_name_the_field(environ: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ReplicateSettings.from_env(environ)
    assert field in _error_fields(caught.value)


def test_unknown_keyword_is_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        StabilitySettings.from_env({}, pol_interval_image_ms=5)
    assert "pol_interval_image_ms" in _error_fields(caught.value)


def test_stability_credit_table_and_price() -> None:
    settings = StabilitySettings.from_env(
        {"STABILITY_CREDITS": '{"stable-image/upscale/creative": 60}'}
    )
    assert settings.credits == {"stable-image/upscale/creative": Decimal(60)}
    assert settings.usd_per_credit == Decimal("0.01")


def test_suno_requires_a_callback_url_once_a_key_is_set() -> None:
    with pytest.raises(ValidationError) as caught:
        SunoSettings.from_env({"SUNO_API_KEY": "k"})
    assert "callback_url" in _error_fields(caught.value)
    assert "SUNO_API_KEY" in str(caught.value)
    unconfigured = SunoSettings.from_env({})
    assert unconfigured.callback_url is None and not unconfigured.configured


def test_suno_callback_url_must_be_http() -> None:
    with pytest.raises(ValidationError) as caught:
        SunoSettings.from_env({"SUNO_API_KEY": "k", "SUNO_CALLBACK_URL": "hooks.example/cb"})
    assert "callback_url" in _error_fields(caught.value)


def test_suno_callback_url_is_treated_as_a_secret() -> None:
    settings = SunoSettings.from_env(
        {"SUNO_API_KEY": "key-1", "SUNO_CALLBACK_URL": "https://h.example/cb?t=s3cret"}
    )
    assert "s3cret" not in repr(settings)
    assert settings.secret_values() == ("key-1", "https://h.example/cb?t=s3cret")


def test_empty_key_is_not_configured() -> None:
    settings = StabilitySettings.from_env({"STABILITY_API_KEY": ""})
    assert not settings.configured
    assert settings.auth_headers() == {}
    assert settings.secret_values() == ()


def test_auth_headers_are_bearer() -> None:
    settings = StabilitySettings.from_env({"STABILITY_API_KEY": "sk-1"})
    assert settings.auth_headers() == {"Authorization": "Bearer sk-1"}
    assert "sk-1" not in repr(settings)


def test_unknown_media_type_gets_the_most_patient_defaults() -> None:
    settings = ReplicateSettings.from_env({})
    assert settings.poll_interval_ms("hologram") == 5_000  # the slowest of the three
    assert settings.timeout_ms("text") == 1_200_000  # the longest of the three
    assert settings.poll_interval_ms("VIDEO") == 5_000


def test_base_settings_need_a_base_url() -> None:
    with pytest.raises(ValidationError) as caught:
        ProviderSettings.from_env({})
    assert "base_url" in _error_fields(caught.value)
