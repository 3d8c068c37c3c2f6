"""The shipped Dockerfile, .dockerignore and docker-compose.yml keep the properties the docs
promise. No Docker daemon exists where the tests run, so these read the files; `make lint`
runs hadolint on the Dockerfile."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _stages(dockerfile: str) -> dict[str, str]:
    """``FROM … AS name`` → the instructions of that stage."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\w+)\s*$", dockerfile, flags=re.M | re.I)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.fixture(scope="module")
def stages() -> dict[str, str]:
    return _stages((ROOT / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_bytecode_is_compiled_in_the_build_stage(stages: dict[str, str]) -> None:
    """The runtime user cannot write __pycache__: without bytecode in the image every start
    and every HEALTHCHECK compiles the whole dependency tree again."""
    build = " ".join(stages["build"].replace("\\\n", " ").split())
    assert re.search(r"python -m compileall .*--invalidation-mode unchecked-hash", build)
    assert "/opt/venv" in build and "migrations" in build.split("compileall", 1)[1]


def test_runtime_code_is_root_owned(stages: dict[str, str]) -> None:
    """Code and migrations must not be writable by the process that runs them (uid 10001)."""
    runtime = stages["runtime"]
    copies = [line for line in runtime.splitlines() if line.startswith("COPY")]
    assert any("migrations" in line for line in copies)
    assert not any("--chown" in line for line in copies), copies
    assert "USER 10001" in runtime


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".venv", ".data", ".git", "**/__pycache__", "tests"} <= ignored
    needed = {"poller", "providers", "storage", "migrations", "main.py", "alembic.ini"}
    assert not needed & ignored


def test_replicated_services_publish_no_fixed_host_port(compose: dict[str, Any]) -> None:
    """Two replicas cannot both bind host port 9090: the second would fail to start."""
    for name, service in compose["services"].items():
        if int(service.get("deploy", {}).get("replicas", 1)) <= 1:
            continue
        for port in service.get("ports", []):
            assert ":" not in str(port), f"{name}: {port} binds one fixed host port"


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is None:
            assert "build" in service, name
            continue
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
