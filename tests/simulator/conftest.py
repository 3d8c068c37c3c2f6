"""Fixtures: a seeded in-process simulator and an authenticated httpx client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer

TOKEN = "sim-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """Override in a test module to start the simulator differently."""
    return SimulatorConfig(seed=1234)


@pytest.fixture
def sim(sim_config: SimulatorConfig) -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config) as server:
        yield server


@pytest.fixture
def client(sim: SimulatorServer) -> Iterator[httpx.Client]:
    # verify=False: plain-http loopback only, and it skips loading the CA bundle per test.
    with httpx.Client(base_url=sim.base_url, headers=AUTH, timeout=10.0, verify=False) as http:
        yield http


@pytest.fixture
def cdn() -> Iterator[httpx.Client]:
    """A client without credentials, as the daemon uses for result URLs."""
    with httpx.Client(timeout=10.0, verify=False) as http:
        yield http
