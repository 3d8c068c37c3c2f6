"""The settings every provider shares, read from ``<PREFIX>_*`` environment variables.

Each vendor module subclasses `ProviderSettings` with its own ``env_prefix``, defaults and price
tables. Defaults come from ``reference/providers.md`` §5.3 (poll cadence and timeouts) and
§5.3's rate budgets, set at roughly 80 % of each vendor's documented limit so that one
unlucky burst does not trip a lockout.

Two ways to build one, both validated the same way (a bad value raises pydantic's
``ValidationError`` naming the field, which the poller turns into one start-up line):

* ``ReplicateSettings()`` / ``ReplicateSettings(**values)`` reads ``os.environ`` (explicit
  keyword values win), the pydantic-settings default the poller relies on;
* ``ReplicateSettings.from_env({"REPLICATE_API_TOKEN": "…"})`` reads *only* the mapping, so
  tests and tools are not affected by whatever the developer's shell exports.

JSON-valued settings (price tables) are decoded by a field validator instead of
pydantic-settings' own decoder, because the latter raises ``SettingsError`` (not a
``ValidationError``) on malformed JSON and would bypass the poller's one-line error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from typing import Annotated, Any, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

MEDIA_TYPES = ("image", "video", "audio")

#: A JSON object of non-negative prices, e.g. ``{"gpu-t4": 0.000225}``; decode it with a
#: ``field_validator(..., mode="before")`` calling `decode_json_table`.
PriceTable = Annotated[dict[str, Annotated[Decimal, Field(ge=0)]], NoDecode]
#: A JSON object of strings, e.g. ``{"owner/model": "gpu-a40-large"}``.
NameTable = Annotated[dict[str, str], NoDecode]

# When set, settings read this mapping instead of os.environ (see `from_env`).
_EXPLICIT_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar(
    "_EXPLICIT_ENVIRON", default=None
)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env source, fed from a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env_vars = {key.lower(): value for key, value in environ.items()}


def decode_json_table(value: Any) -> Any:
    """Accept a JSON object given as a string (environment) or an already-decoded mapping.

    Floats are parsed as ``Decimal`` so a price such as 0.000225 stays exact.
    """
    if isinstance(value, str | bytes):
        try:
            return json.loads(value, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
        except ValueError:
            raise ValueError("not valid JSON") from None
    return value


def check_http_url(value: str, *, field: str) -> str:
    """An absolute http(s) URL with a host; the trailing slash is dropped."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{field} must not carry a query string or fragment")
    return value.rstrip("/")


class ProviderSettings(BaseSettings):
    """Settings shared by every provider; subclasses set ``env_prefix`` and defaults."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, case_sensitive=False
    )

    base_url: str
    api_key: SecretStr | None = None
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(30.0, gt=0, le=3600)
    poll_interval_image_ms: int = Field(5_000, ge=100)
    poll_interval_video_ms: int = Field(10_000, ge=100)
    poll_interval_audio_ms: int = Field(10_000, ge=100)
    timeout_image_ms: int = Field(600_000, ge=1_000)
    timeout_video_ms: int = Field(1_200_000, ge=1_000)
    timeout_audio_ms: int = Field(600_000, ge=1_000)
    max_in_flight: int = Field(16, ge=1, le=10_000, description="concurrent requests per replica")
    rate_per_s: float = Field(1.0, gt=0, description="shared request budget (all replicas)")
    burst: int = Field(4, ge=1, description="token-bucket capacity of that budget")
    # Vendors that limit job creation more tightly than other calls (Replicate: 600 creates
    # a minute, 3000 other requests) get a second shared bucket that only submits draw on.
    submit_rate_per_s: float | None = Field(
        None, gt=0, description="shared budget of create calls (all replicas); unset = none"
    )
    submit_burst: int = Field(4, ge=1, description="token-bucket capacity of that budget")
    max_reply_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest reply read")

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        return check_http_url(value, field="base_url")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values first, then the environment (or the mapping given to `from_env`).

        No dotenv or secrets-dir sources: the daemon's only configuration channel is the
        process environment (DESIGN §1).
        """
        environ = _EXPLICIT_ENVIRON.get()
        if environ is None:
            return (init_settings, env_settings)
        return (init_settings, _MappingEnvSource(settings_cls, environ))

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **values: Any) -> Self:
        """Build from an environment-style mapping (``REPLICATE_API_TOKEN`` …) only."""
        with _reading(environ):
            return cls(**values)

    @property
    def configured(self) -> bool:
        """True when credentials are present, i.e. this daemon may serve the provider's jobs."""
        return self.api_key_value() is not None

    def api_key_value(self) -> str | None:
        """The plain API key, or None when unset or blank.

        Surrounding whitespace is dropped: keys pasted from files or secret stores often end
        in a newline, which is never part of a key and is not a legal header value.
        """
        value = self.api_key.get_secret_value().strip() if self.api_key is not None else ""
        return value or None

    def secret_values(self) -> tuple[str, ...]:
        """Every secret these settings hold, for redacting error snippets."""
        key = self.api_key_value()
        return (key,) if key else ()

    def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate us at ``base_url`` (Bearer token by default)."""
        key = self.api_key_value()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def poll_interval_ms(self, media_type: str) -> int:
        """Default poll interval for a job of that media type (used when the row says NULL).

        An unknown media type gets the slowest of the three: a stray row must never crash
        the daemon, and polling it gently is the safe choice.
        """
        return self._per_media("poll_interval", media_type)

    def timeout_ms(self, media_type: str) -> int:
        """Default job timeout for that media type; unknown types get the longest."""
        return self._per_media("timeout", media_type)

    def _per_media(self, prefix: str, media_type: str) -> int:
        """``{prefix}_{media}_ms`` for a known media type, else the largest of them (asked
        for on every poll, so the known case reads one field)."""
        media = media_type.lower()
        if media in MEDIA_TYPES:
            return int(getattr(self, f"{prefix}_{media}_ms"))
        return max(int(getattr(self, f"{prefix}_{m}_ms")) for m in MEDIA_TYPES)


@contextmanager
def _reading(environ: Mapping[str, str]) -> Iterator[None]:
    token = _EXPLICIT_ENVIRON.set(environ)
    try:
        yield
    finally:
        _EXPLICIT_ENVIRON.reset(token)


S = TypeVar("S", bound=ProviderSettings)


def expect_settings(settings: ProviderSettings, cls: type[S]) -> S:
    """Narrow the registry's generic settings to an adapter's own class (a wiring check)."""
    if not isinstance(settings, cls):
        raise TypeError(f"expected {cls.__name__}, got {type(settings).__name__}")
    return settings
