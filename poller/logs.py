"""structlog set-up: JSON lines on stdout (console renderer on a TTY), secrets scrubbed.

Event names are stable and dotted (``job.claimed``, ``lease.lost`` …); values travel in
keyword fields. Job context (job_id, provider, tenant_id) is bound per task with contextvars.
A last processor removes every configured secret, any credentials embedded in URLs, URL
query strings (where signed URLs keep their signature) and ``Authorization`` values, so a
provider error that echoes our request cannot leak a key.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+(?::[^/\s@]*)?@", re.I)
_BEARER = re.compile(
    r"(?P<kw>bearer|token|api[_-]?key)(?P<sep>[\s=:\"']+)[A-Za-z0-9._\-]{8,}", re.I
)
# Signed CDN URLs carry their credential in the query (X-Amz-Signature=, sig=, Expires=…).
_URL_QUERY = re.compile(r"(?P<url>[a-z][a-z0-9+.-]*://[^\s\"'?#<>]*)\?[^\s\"'#<>)]*", re.I)
REDACTED = "***"
# Tracebacks without frame locals: locals can hold request headers, keys and media bytes.
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


class SecretScrubber:
    """A structlog processor replacing known secret values and credential patterns."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        # Cheap substring checks first: this runs on every string of every log line.
        if "@" in text:
            text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
        if "?" in text and "://" in text:
            text = _URL_QUERY.sub(lambda m: f"{m['url']}?{REDACTED}", text)
        lowered = text.lower()
        if "bearer" in lowered or "token" in lowered or "key" in lowered:
            text = _BEARER.sub(lambda m: f"{m['kw']}{m['sep']}{REDACTED}", text)
        return text

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(v) for v in value]
        return value

    def __call__(
        self, _logger: object, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return {key: self._value(value) for key, value in event.items()}


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and route stdlib loggers (httpx, botocore, psycopg) through it."""
    out = stream or sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    scrubber = SecretScrubber(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    # Exceptions become data (JSON) or text (console) *before* the scrubber: a renderer that
    # formats ``exc_info`` itself prints the exception message unscrubbed (and rich, where
    # installed, adds every frame's locals).
    exceptions = structlog.processors.format_exc_info if use_console else _DICT_TRACEBACKS
    tail: list[Any] = [
        structlog.processors.StackInfoRenderer(),
        exceptions,
        scrubber,
        renderer,
    ]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(_level(level)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _bridge_stdlib(shared, [exceptions, scrubber, renderer], out, level)


def _level(name: str) -> int:
    return int(logging.getLevelName(name.upper()))


def _bridge_stdlib(shared: list[Any], last: list[Any], out: TextIO, level: str) -> None:
    """``last``: exception formatting, the scrubber and the renderer, as for structlog's own
    lines (a stdlib record's ``exc_info`` must be scrubbed too: asyncio, pools, botocore)."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_level(level), logging.INFO))
    for noisy in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    migration = logging.getLogger("alembic.runtime.migration")
    migration.setLevel(logging.INFO)  # "Running upgrade …"
    for old in [f for f in migration.filters if isinstance(f, _MigrationSteps)]:
        migration.removeFilter(old)
    migration.addFilter(_MigrationSteps())


class _MigrationSteps(logging.Filter):
    """Of alembic's INFO lines, only the steps ("Running upgrade a -> b").

    Every read of the revision (`check`, the start of `run`) also logs "Context impl
    PostgresqlImpl." and "Will assume transactional DDL.": noise on each HEALTHCHECK, and two
    extra stderr lines where `check` promises one ``unhealthy: …`` line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.getMessage().startswith("Running ")
