"""Settings: every variable parsed, bad ones rejected with one line naming them."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from poller.health import HealthServer
from poller.runner import warn_unknown_variables
from poller.settings import PollerSettings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]

# A valid value for every POLLER_* knob (and what it must parse to).
VALID = {
    "POLLER_CONCURRENCY": ("12", 12),
    "POLLER_BATCH_SIZE": ("7", 7),
    "POLLER_LEASE_TTL_S": ("9.5", 9.5),
    "POLLER_SHUTDOWN_GRACE_S": ("3", 3.0),
    "POLLER_LOG_LEVEL": ("debug", "debug"),
    "POLLER_LOG_FORMAT": ("console", "console"),
    "POLLER_TMP_DIR": ("/tmp/poller-x", Path("/tmp/poller-x")),
    "POLLER_HTTP_PORT": ("9191", 9191),
    "POLLER_HTTP_HOST": ("127.0.0.1", "127.0.0.1"),
    "POLLER_ALLOW_PRIVATE_DOWNLOADS": ("true", True),
    "POLLER_MAX_DOWNLOAD_BYTES": ("1048576", 1048576),
    "POLLER_DOWNLOAD_CONNECT_TIMEOUT_S": ("2", 2.0),
    "POLLER_DOWNLOAD_READ_TIMEOUT_S": ("4", 4.0),
    "POLLER_DOWNLOAD_TOTAL_TIMEOUT_S": ("60", 60.0),
    "POLLER_DOWNLOAD_MIN_BYTES_PER_S": ("1000", 1000),
    "POLLER_S3_MAX_THREADS": ("3", 3),
    "POLLER_S3_MULTIPART_THRESHOLD_BYTES": ("10485760", 10485760),
    "POLLER_S3_SEND_CHECKSUM": ("false", False),
    "POLLER_METADATA_TIMEOUT_S": ("7.5", 7.5),
    "POLLER_METADATA_PROCESSES": ("3", 3),
    "POLLER_METADATA_MAX_MEMORY_BYTES": ("536870912", 536870912),
    "POLLER_MAX_CLAIMS_WITHOUT_WRITEBACK": ("3", 3),
    "POLLER_ERROR_BUDGET": ("4", 4),
    "POLLER_ERROR_BACKOFF_MAX_S": ("30", 30.0),
    "POLLER_IDLE_POLL_MAX_S": ("1.5", 1.5),
    "POLLER_MIN_CLAIM_GAP_S": ("0.01", 0.01),
    "POLLER_TENANT_CLAIM_SHARE": ("2", 2),
    "POLLER_WRITEBACK_FLUSH_S": ("0.1", 0.1),
    "POLLER_BUDGET_CHUNK": ("5", 5),
    "POLLER_AUTH_PAUSE_S": ("120", 120.0),
    "POLLER_DB_POOL_SIZE": ("3", 3),
    "POLLER_DB_STATEMENT_TIMEOUT_S": ("12.5", 12.5),
    "POLLER_WORKER_ID": ("replica-7", "replica-7"),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("POLLER_", "REPLICATE_", "STABILITY_", "SUNO_")):
            monkeypatch.delenv(name)
    for name in ("DATABASE_URL", "STORAGE_URL", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def test_every_poller_knob_is_covered_here() -> None:
    assert set(VALID) == {f"POLLER_{f.upper()}" for f in PollerSettings.model_fields}


def test_every_documented_variable_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, (raw, _) in VALID.items():
        monkeypatch.setenv(name, raw)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h:5432/db")
    monkeypatch.setenv("STORAGE_URL", "s3://bucket/prefix")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_x")
    monkeypatch.setenv("REPLICATE_BASE_URL", "https://replicate.example")
    monkeypatch.setenv("SUNO_CALLBACK_URL", "https://cb.example/suno")
    settings = load_settings()
    for name, (_, expected) in VALID.items():
        assert getattr(settings.poller, name.removeprefix("POLLER_").lower()) == expected, name
    assert settings.database_url == "postgresql://u@h:5432/db"
    assert settings.storage_config().storage_url == "s3://bucket/prefix"
    assert settings.storage_config().s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.storage_config().max_download_bytes == 1048576
    assert settings.storage_config().s3_send_checksum is False
    assert settings.storage_config().metadata_timeout_s == 7.5
    assert settings.storage_config().metadata_processes == 3
    assert settings.storage_config().metadata_max_memory_bytes == 536870912
    assert settings.providers["replicate"].base_url == "https://replicate.example"
    assert list(settings.configured_providers()) == ["replicate"]
    assert settings.unconfigured_providers() == ["stability", "suno"]
    assert settings.unknown_provider_variables == ()


def test_defaults_need_no_environment() -> None:
    settings = load_settings()
    assert settings.poller.concurrency == 64
    assert settings.core.storage_url == "file://./.data/artifacts"
    assert settings.storage_config().s3_send_checksum is True
    assert settings.storage_config().metadata_timeout_s == 30.0
    assert settings.storage_config().metadata_processes == 2
    assert settings.storage_config().metadata_max_memory_bytes == 1024**3
    with pytest.raises(SettingsError, match="DATABASE_URL is not set"):
        _ = settings.database_url


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("POLLER_BATCH_SIZE", "lots", "POLLER_BATCH_SIZE: Input should be a valid integer"),
        ("POLLER_CONCURRENCY", "0", "POLLER_CONCURRENCY: Input should be greater than or equal"),
        ("POLLER_LOG_LEVEL", "loud", "POLLER_LOG_LEVEL: Input should be"),
        ("POLLER_ALLOW_PRIVATE_DOWNLOADS", "perhaps", "POLLER_ALLOW_PRIVATE_DOWNLOADS:"),
        ("POLLER_LEASE_TTL_S", "-1", "POLLER_LEASE_TTL_S: Input should be greater than 0"),
        ("POLLER_BATCHSIZE", "5", "POLLER_BATCHSIZE: unknown setting"),
        ("POLLER_METADATA_TIMEOUT_S", "0", "POLLER_METADATA_TIMEOUT_S: Input should be greater"),
        ("POLLER_METADATA_PROCESSES", "0", "POLLER_METADATA_PROCESSES: Input should be greater"),
        (
            "POLLER_METADATA_MAX_MEMORY_BYTES",
            "1048576",
            "POLLER_METADATA_MAX_MEMORY_BYTES: must be 0 (no cap) or at least",
        ),
        ("REPLICATE_BASE_URL", "ftp://x", "REPLICATE_BASE_URL: base_url must be an absolute"),
        ("S3_ENDPOINT_URL", "minio:9000", "S3_ENDPOINT_URL: must be an absolute http(s) URL"),
        ("REPLICATE_POLL_INTERVAL_IMAGE_MS", "soon", "REPLICATE_POLL_INTERVAL_IMAGE_MS"),
        ("POLLER_HTTP_HOST", "bad host!", "POLLER_HTTP_HOST: expected an IP"),
        ("POLLER_HTTP_HOST", "-leading.example", "POLLER_HTTP_HOST:"),
        ("poller_lease_ttl_s", "5", "poller_lease_ttl_s: setting names are upper case: use"),
        ("Poller_Lease_TTL", "5", "Poller_Lease_TTL: unknown setting"),
    ],
)
def test_invalid_values_give_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert "Value error" not in message  # pydantic's prefix is not for operators


def test_empty_poller_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """``VAR=`` lines in env files: an empty POLLER_TMP_DIR was ``Path('.')``, so start-up
    swept stale temp files in the working directory."""
    for name in ("POLLER_TMP_DIR", "POLLER_HTTP_PORT", "POLLER_HTTP_HOST", "POLLER_WORKER_ID"):
        monkeypatch.setenv(name, "")
    poller = load_settings().poller
    assert poller.tmp_dir is None and poller.http_port is None
    assert (poller.http_host, poller.worker_id) == ("0.0.0.0", None)


def test_misspelt_provider_variables_are_named_with_the_closest_known_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``REPLICATE_TOKEN`` instead of ``REPLICATE_API_TOKEN`` was ignored without a word, and
    the replica silently did not serve Replicate."""
    monkeypatch.setenv("REPLICATE_TOKEN", "r8_secret_value")
    monkeypatch.setenv("SUNO_APIKEY", "k")
    monkeypatch.setenv("STABILITY_FROBNICATE", "1")
    monkeypatch.setenv("REPLICATE_API_KEY", "r8_x")  # accepted beside REPLICATE_API_TOKEN
    monkeypatch.setenv("SUNO_CALLBACK_URL", "https://cb.example/suno")
    assert load_settings().unknown_provider_variables == (
        ("REPLICATE_TOKEN", "REPLICATE_API_TOKEN"),
        ("STABILITY_FROBNICATE", None),
        ("SUNO_APIKEY", "SUNO_API_KEY"),
    )


def test_unknown_provider_variables_are_logged_by_name_never_by_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPLICATE_TOKEN", "r8_secret_value")
    with capture_logs() as logs:
        warn_unknown_variables(load_settings())
    assert logs == [
        {
            "event": "settings.unknown_variable",
            "log_level": "warning",
            "name": "REPLICATE_TOKEN",
            "did_you_mean": "REPLICATE_API_TOKEN",
            "detail": "no setting reads this variable: it is ignored (README lists the names)",
        }
    ]
    assert "r8_secret_value" not in repr(logs)


def test_an_empty_s3_endpoint_means_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """``S3_ENDPOINT_URL=`` in a compose file: botocore said only "Invalid endpoint: "."""
    monkeypatch.setenv("S3_ENDPOINT_URL", " ")
    assert load_settings().storage_config().s3_endpoint_url is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "127.0.0.1", "localhost", "poller-0.svc."])
def test_http_host_accepts_addresses_and_host_names(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv("POLLER_HTTP_HOST", host)
    assert load_settings().poller.http_host == host


def test_a_port_in_use_is_a_settings_error_naming_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError) as info:
            HealthServer("127.0.0.1", port, lambda: (True, {}))
    assert str(info.value).startswith(f"POLLER_HTTP_PORT: cannot serve on 127.0.0.1:{port}: ")


def test_an_address_not_on_this_host_is_a_settings_error_naming_the_host() -> None:
    with pytest.raises(SettingsError, match=r"^POLLER_HTTP_HOST: cannot serve on 192\.0\.2\.1:"):
        HealthServer("192.0.2.1", 0, lambda: (True, {}))  # TEST-NET-1: never local


def test_cli_exits_2_with_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLER_BATCH_SIZE", "lots")
    done = subprocess.run(
        [sys.executable, "main.py", "check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: POLLER_BATCH_SIZE: Input should be a valid integer, unable to parse string as "
        "an integer (got 'lots')"
    ]


def test_main_without_database_url_exits_2() -> None:
    done = subprocess.run(
        [sys.executable, "main.py", "run"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "DATABASE_URL is not set" in done.stderr


def test_tenant_claim_share_is_described_as_the_minimum_it_is() -> None:
    """The claim offers ``greatest(share, ceil(batch / tenants))`` rows per tenant
    (poller/sql.py), so the share is a floor; the field once called it a maximum."""
    description = PollerSettings.model_fields["tenant_claim_share"].description or ""
    assert description.startswith("minimum rows each tenant offers per claim round")
    assert "greatest(" in (ROOT / "poller" / "sql.py").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SUNO_CALLBACK_URL", "hooks.example.com/suno?token=cb-secret-123"),
        ("SUNO_CALLBACK_URL", "ftp://hooks.example.com/suno/cb-secret-123"),
    ],
)
def test_an_invalid_secret_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """The one-line error goes to stderr and from there to log collectors: it names the
    variable but, for a secret (the callback URL carries an unguessable token), not the
    value; a plain setting still shows what was given."""
    monkeypatch.setenv("SUNO_API_KEY", "sk-suno-key-1234")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{name}: must be an absolute http(s) URL")
    assert "cb-secret-123" not in message


def test_repr_of_the_settings_hides_the_database_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DATABASE_URL carries the password; API keys are SecretStr. A repr (a traceback with
    locals, a debug print) shows neither."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://poller:pg-pass-1234@db:5432/media")
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_replicate_token_1234")
    settings = load_settings()
    assert settings.database_url.endswith("@db:5432/media")  # still usable
    for shown in (repr(settings), repr(settings.core), str(settings.core)):
        assert "pg-pass-1234" not in shown
        assert "r8_replicate_token_1234" not in shown
