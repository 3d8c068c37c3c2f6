"""Secrets never reach the log stream."""

from __future__ import annotations

import io
import json
import logging

import structlog

from poller.logs import SecretScrubber, configure_logging


def test_scrubber_removes_known_secrets_url_credentials_and_bearer_tokens() -> None:
    scrub = SecretScrubber(["r8_supersecret"]).scrub
    assert "r8_supersecret" not in scrub("request failed with key r8_supersecret")
    assert scrub("postgresql://app:pw@db:5432/x") == "postgresql://***@db:5432/x"
    assert "abcdefghijkl" not in scrub("Authorization: Bearer abcdefghijkl")


def test_json_log_line_has_event_name_and_no_secret() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", secrets=["sk-live-123456"], stream=out)
    structlog.get_logger("t").info(
        "provider.polled", detail="echo sk-live-123456", nested={"url": "https://u:p@h/x"}
    )
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["event"] == "provider.polled"
    assert line["level"] == "info"
    assert "sk-live-123456" not in out.getvalue()
    assert line["nested"]["url"] == "https://***@h/x"


def test_alembic_logs_its_steps_but_not_its_preamble() -> None:
    """`check` and `run` read the revision through alembic; its "Context impl …" lines must
    not add to the one line `check` prints, while `migrate` still logs each step."""
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)
    migration = logging.getLogger("alembic.runtime.migration")
    migration.info("Context impl %s.", "PostgresqlImpl")
    migration.info("Will assume %s DDL.", "transactional")
    migration.info("Running upgrade %s -> %s, %s", "poller_0005", "poller_0006", "doc")
    migration.warning("Revision %s is present more than once", "x")
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == [
        "Running upgrade poller_0005 -> poller_0006, doc",
        "Revision x is present more than once",
    ]


def _raise_with_secrets() -> None:
    raise RuntimeError("boom sk-live-123456 postgresql://app:pg-pw-42@db/x")


def test_a_stdlib_record_with_exc_info_is_scrubbed() -> None:
    """asyncio, psycopg_pool, botocore log through the stdlib bridge; their exc_info was
    rendered as the exception's repr after the scrubber had run, so its message leaked."""
    out = io.StringIO()
    configure_logging(level="info", fmt="json", secrets=["sk-live-123456"], stream=out)
    try:
        _raise_with_secrets()
    except RuntimeError:
        logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
    text = out.getvalue()
    assert "sk-live-123456" not in text and "pg-pw-42" not in text
    line = json.loads(text.strip().splitlines()[-1])
    assert line["exception"][0]["exc_value"] == "boom *** postgresql://***@db/x"


def test_console_exceptions_are_scrubbed() -> None:
    """The console renderer (a TTY: ``docker run -t``) formatted exc_info itself, after the
    scrubber: the exception message went out as raised."""
    out = io.StringIO()
    configure_logging(level="info", fmt="console", secrets=["sk-live-123456"], stream=out)
    try:
        _raise_with_secrets()
    except RuntimeError:
        structlog.get_logger("t").exception("job.step_crashed")
        logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
    text = out.getvalue()
    assert text.count("RuntimeError: boom *** postgresql://***@db/x") == 2
    assert "sk-live-123456" not in text and "pg-pw-42" not in text


def test_scrubber_removes_the_query_of_signed_urls() -> None:
    """A signed CDN URL is a credential until it expires: its query never reaches a log."""
    scrub = SecretScrubber().scrub
    text = scrub(
        "download failed: https://b.s3.amazonaws.com/o.png?X-Amz-Credential=AKIAEX"
        "&X-Amz-Signature=f00dfeed (and https://cdn.example/a.mp3?sig=deadbeef)"
    )
    assert text == (
        "download failed: https://b.s3.amazonaws.com/o.png?*** (and https://cdn.example/a.mp3?***)"
    )
    assert scrub("is this ok? yes") == "is this ok? yes"
