"""The daemon's settings tree: read once from the environment at start-up.

This is the only module that reads the environment. Names are part of the external contract
(DESIGN.md §1, §10): ``DATABASE_URL``, ``STORAGE_URL``, ``S3_ENDPOINT_URL``, the provider
prefixes (``REPLICATE_*``, ``STABILITY_*``, ``SUNO_*``, read by each provider's own settings
class) and ``POLLER_*`` knobs. An unknown ``POLLER_*`` variable or an invalid value stops
start-up with one line naming the variable, because a typo that is silently ignored is how a
production daemon ends up running with the wrong lease TTL.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from providers.errors import ProviderPluginError
from providers.registry import ProviderSpec, load_providers
from providers.settings import ProviderSettings
from storage import StorageConfig, parse_storage_url
from storage.config import MIN_METADATA_MEMORY_BYTES
from storage.errors import StorageConfigError

GiB = 1024**3
# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$"
)


class SettingsError(Exception):
    """Start-up configuration is invalid; ``str()`` is one line naming the variable."""


class PollerSettings(BaseSettings):
    """``POLLER_*`` knobs. Seconds are floats with an ``_s`` suffix; sizes are bytes.

    An empty variable counts as unset (``POLLER_TMP_DIR=`` in an env file must not mean
    ``Path('.')``, the working directory); names must be upper case, see
    `_reject_unknown_poller_vars`."""

    model_config = SettingsConfigDict(
        env_prefix="POLLER_", frozen=True, extra="ignore", env_ignore_empty=True
    )

    concurrency: int = Field(64, ge=1, le=20_000, description="jobs in flight per replica")
    batch_size: int = Field(50, ge=1, le=1000, description="max jobs per claim statement")
    lease_ttl_s: float = Field(60.0, gt=0, description="lease per claimed poll; rescue delay")
    shutdown_grace_s: float = Field(20.0, ge=0, description="time to finish in-flight polls")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    tmp_dir: Path | None = Field(None, description="temp dir for downloads (same FS as store)")
    http_port: int | None = Field(None, ge=0, le=65535, description="/metrics, /healthz, /readyz")
    http_host: str = Field("0.0.0.0", description="bind address: an IP address or host name")
    allow_private_downloads: bool = False
    max_download_bytes: int = Field(2 * GiB, ge=1)
    download_connect_timeout_s: float = Field(10.0, gt=0)
    download_read_timeout_s: float = Field(30.0, gt=0)
    download_total_timeout_s: float = Field(900.0, gt=0)
    download_min_bytes_per_s: int = Field(16 * 1024, ge=0)
    s3_max_threads: int = Field(8, ge=1, le=128)
    s3_multipart_threshold_bytes: int = Field(64 * 1024 * 1024, ge=5 * 1024 * 1024)
    s3_send_checksum: bool = Field(
        True, description="send x-amz-checksum-sha256 on uploads (off for servers lacking it)"
    )
    metadata_timeout_s: float = Field(
        30.0, gt=0, description="longest metadata parse of one file before it is rejected"
    )
    metadata_processes: int = Field(
        2, ge=1, le=64, description="worker processes that parse media metadata"
    )
    metadata_max_memory_bytes: int = Field(
        GiB, ge=0, description="address-space cap of each parser process (0: no cap)"
    )
    max_claims_without_writeback: int = Field(
        5, ge=1, description="crash-loop guard: fail after this many claims with no write-back"
    )
    error_budget: int = Field(8, ge=0, description="consecutive transient errors before failing")
    error_backoff_max_s: float = Field(60.0, gt=0)
    idle_poll_max_s: float = Field(2.0, gt=0, description="longest sleep between claim rounds")
    min_claim_gap_s: float = Field(0.02, ge=0, description="shortest gap between claim rounds")
    tenant_claim_share: int = Field(
        4,
        ge=1,
        description="minimum rows each tenant offers per claim round (round-robin fairness)",
    )
    writeback_flush_s: float = Field(0.05, gt=0, description="batch window for write-backs")
    budget_chunk: int = Field(
        10, ge=1, description="fewest rate-budget tokens taken per DB round trip"
    )
    auth_pause_s: float = Field(300.0, gt=0, description="pause after a provider rejects keys")
    db_pool_size: int = Field(4, ge=2, le=100)
    db_statement_timeout_s: float = Field(
        30.0, gt=0, description="longest statement of the daemon's sessions (statement_timeout)"
    )
    worker_id: str | None = Field(None, description="lease owner name (default host:pid:rand)")

    @field_validator("http_host")
    @classmethod
    def _bindable_host(cls, value: str) -> str:
        """An IP address or a host name; anything else could only fail once the health
        server binds, after the pool and the provider clients are already up."""
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError("expected an IP address or a host name, e.g. 0.0.0.0") from None
        return value

    @field_validator("metadata_max_memory_bytes")
    @classmethod
    def _room_to_parse(cls, value: int) -> int:
        """A cap the parser cannot even start under would reject every good file."""
        if 0 < value < MIN_METADATA_MEMORY_BYTES:
            raise ValueError(
                f"must be 0 (no cap) or at least {MIN_METADATA_MEMORY_BYTES} (256 MiB): a "
                "parser process needs about 130 MiB before it reads a file"
            )
        return value

    @model_validator(mode="after")
    def _grace_below_lease(self) -> Self:
        if self.writeback_flush_s >= self.lease_ttl_s:
            raise ValueError("POLLER_WRITEBACK_FLUSH_S must be below POLLER_LEASE_TTL_S")
        return self

    def effective_worker_id(self) -> str:
        """A lease owner name an operator can trace back to a host and process."""
        return self.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class CoreSettings(BaseSettings):
    """The un-prefixed names fixed by DESIGN.md §1."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # Holds the password: kept out of repr (tracebacks with locals, debug prints, test output).
    database_url: str | None = Field(None, repr=False)
    storage_url: str = "file://./.data/artifacts"
    s3_endpoint_url: str | None = None
    aws_region: str | None = Field(None, validation_alias="AWS_REGION")

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_is_a_url(cls, value: str | None) -> str | None:
        """Empty means AWS (a blank line in a compose file); anything else must be a URL
        here, not botocore's bare "Invalid endpoint" at the first upload check."""
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as http://127.0.0.1:9000")
        return value.strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the daemon needs, validated once."""

    core: CoreSettings
    poller: PollerSettings
    providers: Mapping[str, ProviderSettings]
    specs: Mapping[str, ProviderSpec]
    # (name, closest known name or None) for variables with a provider's prefix that no
    # setting reads: a misspelt key (REPLICATE_TOKEN) is otherwise ignored without a word.
    unknown_provider_variables: tuple[tuple[str, str | None], ...] = ()

    @property
    def database_url(self) -> str:
        if not self.core.database_url:
            raise SettingsError(
                "DATABASE_URL is not set: point it at PostgreSQL "
                "(postgresql://user@host:port/db); `make run` starts a local one for you"
            )
        return self.core.database_url

    def storage_config(self) -> StorageConfig:
        p = self.poller
        return StorageConfig(
            storage_url=self.core.storage_url,
            tmp_dir=p.tmp_dir,
            s3_endpoint_url=self.core.s3_endpoint_url,
            s3_region=self.core.aws_region,
            s3_max_threads=p.s3_max_threads,
            s3_multipart_threshold_bytes=p.s3_multipart_threshold_bytes,
            s3_send_checksum=p.s3_send_checksum,
            max_download_bytes=p.max_download_bytes,
            allow_private_downloads=p.allow_private_downloads,
            connect_timeout_s=p.download_connect_timeout_s,
            read_timeout_s=p.download_read_timeout_s,
            total_timeout_s=p.download_total_timeout_s,
            min_throughput_bytes_per_s=p.download_min_bytes_per_s,
            metadata_timeout_s=p.metadata_timeout_s,
            metadata_processes=p.metadata_processes,
            metadata_max_memory_bytes=p.metadata_max_memory_bytes,
        )

    def configured_providers(self) -> dict[str, ProviderSettings]:
        """Providers with credentials: the only ones whose jobs this daemon claims."""
        return {name: s for name, s in self.providers.items() if s.configured}

    def unconfigured_providers(self) -> list[str]:
        return sorted(name for name, s in self.providers.items() if not s.configured)


# Read by the development tooling (devenv.pgcluster), not by the daemon; tolerated so that a
# shell exporting it can still start daemons.
TOOLING_VARIABLES = {"POLLER_TEST_PG"}


def known_poller_variables() -> set[str]:
    return {f"POLLER_{name.upper()}" for name in PollerSettings.model_fields}


def _reject_unknown_poller_vars(environ: Mapping[str, str]) -> None:
    """pydantic-settings matches names case-insensitively, so ``poller_lease_ttl_s`` would be
    read while a lower-case typo would be silently ignored: only exact upper-case names of
    known settings pass."""
    known = _KNOWN | TOOLING_VARIABLES
    unknown = sorted(k for k in environ if k.upper().startswith("POLLER_") and k not in known)
    if not unknown:
        return
    name = unknown[0]
    if name.upper() in known:
        raise SettingsError(f"{name}: setting names are upper case: use {name.upper()}")
    raise SettingsError(
        f"{name}: unknown setting (known POLLER_* settings are listed in README.md)"
    )


def _one_line(exc: ValidationError, prefix: str, model: type[BaseSettings] | None = None) -> str:
    err = exc.errors()[0]
    loc = "_".join(str(part) for part in err["loc"]).upper()
    # pydantic prefixes what a validator raised with its exception type: not for operators
    message = str(err["msg"]).removeprefix("Value error, ")
    if not loc:  # a rule spanning several fields names them in its own message
        return message
    name = loc if loc.startswith(prefix) or not prefix else f"{prefix}{loc}"
    value = err.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
    if model is not None and _is_secret(model, err["loc"]):
        shown = ""  # SUNO_CALLBACK_URL, API keys: the value goes to stderr and log collectors
    return f"{name}: {message}{shown}"


def _is_secret(model: type[BaseSettings], loc: tuple[int | str, ...]) -> bool:
    """True when the error is about a `SecretStr` field (named by field name or alias)."""
    key = str(loc[0]).lower() if loc else ""
    for field_name, field in model.model_fields.items():
        names = {field_name, str(field.alias or ""), str(field.validation_alias or "")}
        if key in {n.lower() for n in names if n}:
            kinds = get_args(field.annotation) or (field.annotation,)
            return any(isinstance(k, type) and issubclass(k, SecretStr) for k in kinds)
    return False


def provider_variables(settings_cls: type[ProviderSettings]) -> set[str]:
    """Every environment name a provider's settings read (upper case): the prefixed field
    names, which pydantic-settings reads even beside an alias, and the aliases."""
    prefix = str(settings_cls.model_config.get("env_prefix") or "").upper()
    names: set[str] = set()
    for field_name, field in settings_cls.model_fields.items():
        names.add(f"{prefix}{field_name.upper()}")
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names.update(c.upper() for c in choices if isinstance(c, str))
    return names


def _unknown_provider_variables(
    environ: Mapping[str, str], specs: Mapping[str, ProviderSpec]
) -> tuple[tuple[str, str | None], ...]:
    unknown: list[tuple[str, str | None]] = []
    for spec in specs.values():
        prefix = str(spec.settings_cls.model_config.get("env_prefix") or "").upper()
        if not prefix:
            continue
        known = provider_variables(spec.settings_cls)
        for name in sorted(environ):
            if name.upper().startswith(prefix) and name.upper() not in known:
                unknown.append((name, _closest(name.upper(), prefix, known)))
    return tuple(unknown)


def _closest(name: str, prefix: str, known: set[str]) -> str | None:
    """The known name most like ``name``, compared after the shared prefix (which would
    otherwise make every pair look alike)."""
    tails = {k.removeprefix(prefix): k for k in known}
    close = difflib.get_close_matches(name.removeprefix(prefix), sorted(tails), n=1, cutoff=0.6)
    return tails[close[0]] if close else None


def load_settings() -> Settings:
    """Read and validate the environment once; raise SettingsError with one clear line."""
    _reject_unknown_poller_vars(os.environ)
    try:
        core = CoreSettings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, "")) from None
    try:
        parse_storage_url(core.storage_url)
    except StorageConfigError as exc:
        raise SettingsError(f"STORAGE_URL: {exc}") from None
    try:
        poller = PollerSettings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, "POLLER_")) from None
    try:
        specs = load_providers()
    except ProviderPluginError as exc:
        raise SettingsError(str(exc)) from None
    providers: dict[str, ProviderSettings] = {}
    for name, spec in specs.items():
        try:
            providers[name] = spec.settings_cls()
        except ValidationError as exc:
            raise SettingsError(_one_line(exc, f"{name.upper()}_", spec.settings_cls)) from None
    return Settings(
        core=core,
        poller=poller,
        providers=providers,
        specs=specs,
        unknown_provider_variables=_unknown_provider_variables(os.environ, specs),
    )


_KNOWN = known_poller_variables()
