"""CLI: `python -m simulator [options]` runs the provider simulator until SIGTERM/SIGINT.

Once listening it prints its base URL (one line, stdout) and, with `--ready-file`, writes
the same line to that file atomically, so scripts can start it with `--port 0` and wait
for the file. See `python -m simulator --help` and the `simulator` package docstring.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from simulator.app import SimulatorApp
from simulator.config import FAULT_SCOPES, PROVIDERS, FaultRates, SimulatorConfig
from simulator.scenarios import ScenarioError
from simulator.server import backend_options, serve
from simulator.state import SimState


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1]: {text}")
    return value


def _rate_limit(text: str) -> tuple[str, float]:
    provider, sep, rate = text.partition("=")
    if not sep or provider not in PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"expected PROVIDER=REQUESTS_PER_S with PROVIDER in {PROVIDERS}"
        )
    return provider, float(rate)


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.partition("x")
    if not sep:
        raise argparse.ArgumentTypeError("expected WIDTHxHEIGHT, e.g. 64x64")
    return int(width), int(height)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Loopback fake of the Replicate, Stability AI and Suno (sunoapi.org) APIs.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=0, help="port (default 0: any free port)")
    add("--seed", type=int, default=None, help="seed for ids and every random decision")
    add(
        "--complete-after-polls",
        type=int,
        default=3,
        metavar="N",
        help="job done after N polls (0: never by count; default 3)",
    )
    add(
        "--complete-after-seconds",
        type=float,
        default=0.0,
        metavar="T",
        help="job done T s after submit (0: never by time; default)",
    )
    add(
        "--duration-jitter",
        type=float,
        default=0.0,
        metavar="F",
        help="spread T by ±F per job (0..1)",
    )
    add(
        "--fault-5xx",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability of 500/502/503/504",
    )
    add(
        "--fault-429",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability of a throttle reply",
    )
    add(
        "--fault-slow",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability of added latency",
    )
    add(
        "--fault-malformed",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability of a cut-off JSON body",
    )
    add(
        "--slow-seconds",
        type=float,
        default=2.0,
        metavar="S",
        help="latency of a slow fault (default 2)",
    )
    add(
        "--retry-after",
        type=int,
        default=1,
        metavar="S",
        help="Retry-After seconds on throttle replies (default 1)",
    )
    add(
        "--fault-scope",
        default="poll,cancel",
        help=f"comma list of {sorted(FAULT_SCOPES)} (default poll,cancel)",
    )
    add(
        "--rate-limit",
        type=_rate_limit,
        action="append",
        default=[],
        metavar="PROVIDER=RPS",
        help="enforce a request rate (repeatable)",
    )
    add("--scenario", default="", help="scenario tokens applied to every job before its own")
    add(
        "--image-size", type=_size, default=(64, 64), metavar="WxH", help="default image/video size"
    )
    add("--video-seconds", type=float, default=2.0, help="default video duration")
    add("--audio-seconds", type=float, default=5.0, help="default audio duration")
    add("--cdn-host", default=None, help="serve result files from this second loopback address")
    add("--ready-file", type=Path, default=None, help="write the base URL here once listening")
    add("--no-uvloop", action="store_true", help="use the stock asyncio loop")
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build the config; ValueError on inconsistent values."""
    scope = frozenset(s.strip() for s in args.fault_scope.split(",") if s.strip())
    faults = FaultRates(
        p_5xx=args.fault_5xx,
        p_429=args.fault_429,
        p_slow=args.fault_slow,
        p_malformed=args.fault_malformed,
        slow_s=args.slow_seconds,
        retry_after_s=args.retry_after,
        scope=scope,  # validated by FaultRates
    )
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        complete_after_polls=args.complete_after_polls,
        complete_after_s=args.complete_after_seconds,
        duration_jitter=args.duration_jitter,
        faults=faults,
        rate_limits=dict(args.rate_limit),
        scenario=args.scenario,
        image_size=args.image_size,
        video_duration_s=args.video_seconds,
        audio_duration_s=args.audio_seconds,
        cdn_host=args.cdn_host,
        use_uvloop=not args.no_uvloop,
    )


def _announce(base_url: str, ready_file: Path | None) -> None:
    print(base_url, flush=True)
    if ready_file is not None:
        partial = ready_file.with_name(ready_file.name + ".tmp")
        partial.write_text(base_url + "\n")
        os.replace(partial, ready_file)


async def _run(app: SimulatorApp, ready_file: Path | None) -> None:
    async with anyio.create_task_group() as group:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            base_url = await group.start(serve, app)
            _announce(base_url, ready_file)
            async for _ in signals:
                group.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        app = SimulatorApp(SimState(config))
    except (ValueError, ScenarioError) as exc:
        print(f"simulator: invalid configuration: {exc}", file=sys.stderr)
        return 2
    anyio.run(
        _run, app, args.ready_file, backend="asyncio", backend_options=backend_options(config)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
