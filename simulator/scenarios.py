"""Per-job scenario selectors: how a simulated job behaves, chosen by the request itself.

Tests and demos pick a behaviour per job by putting tokens in the job's own input, so the
daemon under test needs no special knowledge of the simulator:

* Replicate: ``input.sim_scenario`` (string), or ``[sim:...]`` inside ``input.prompt``;
* Stability: form field ``sim_scenario``, or ``[sim:...]`` inside the ``prompt`` field;
* Suno: top-level body field ``sim_scenario``, or ``[sim:...]`` inside ``prompt``,
  ``style`` or ``title``.

Tokens are separated by commas or whitespace, arguments by colons, and later tokens win
(the server's ``--scenario`` default comes first). The full token table is in the
``simulator`` package docstring. An unknown or malformed token is rejected by the vendor
endpoint with its usual validation error, so a typo never silently runs the happy path.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast

from simulator.media import MediaFormat

Outcome = Literal[
    "success", "fail", "moderation", "filtered", "expired", "create_failed", "callback_exception"
]
Shape = Literal["string", "list", "object", "data"]

_PROMPT_TAG: Final = re.compile(r"\[sim:([^\]]*)\]")
_SPLIT: Final = re.compile(r"[\s,]+")
_SIZE: Final = re.compile(r"^(\d+)x(\d+)$")
_BYTES: Final = re.compile(r"^(\d+)([KMG]?)$", re.IGNORECASE)
_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_MAX_DIMENSION = 4096


class ScenarioError(ValueError):
    """A `sim_scenario` the simulator does not understand (reported as a 400/422)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """Return `status` for the first `count` matching requests of one job (or file)."""

    status: int
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """Everything a job's tokens can change; defaults are the plain happy path."""

    outcome: Outcome = "success"
    stuck: bool = False
    unknown_status: bool = False
    polls: int | None = None
    seconds: float | None = None
    outputs: int | None = None
    shape: Shape | None = None
    fmt: MediaFormat | None = None
    size: tuple[int, int] | None = None
    duration_s: float | None = None
    large_bytes: int | None = None
    static: bool = False
    predict_time: float | None = None
    submit_error: int | None = None
    submit_slow_s: float = 0.0
    submit_malformed: bool = False
    poll_error: FaultPlan | None = None
    poll_slow_s: float = 0.0
    poll_slow_count: int | None = None
    poll_malformed: int = 0
    cdn_error: FaultPlan | None = None
    cdn_slow_s: float = 0.0
    cdn_truncate: int = 0
    cdn_wrong_type: bool = False

    @property
    def sets_duration(self) -> bool:
        """True when the job's tokens set its duration (the server's defaults then do not apply)."""
        return self.polls is not None or self.seconds is not None


def _int(args: list[str], index: int, default: int | None = None, *, low: int = 0) -> int:
    if index >= len(args):
        if default is None:
            raise ScenarioError("missing integer argument")
        return default
    try:
        value = int(args[index])
    except ValueError:
        raise ScenarioError(f"not an integer: {args[index]!r}") from None
    if value < low:
        raise ScenarioError(f"must be ≥ {low}: {value}")
    return value


def _float(args: list[str], index: int = 0) -> float:
    try:
        value = float(args[index])
    except (IndexError, ValueError):
        raise ScenarioError("missing or invalid number argument") from None
    if not value >= 0 or value == float("inf"):
        raise ScenarioError(f"must be a finite number ≥ 0: {args[index]}")
    return value


def _status(args: list[str]) -> int:
    status = _int(args, 0)
    if not 400 <= status <= 599:
        raise ScenarioError(f"error status must be 4xx/5xx: {status}")
    return status


def parse_byte_count(text: str) -> int:
    """`1048576`, `512K`, `512M`, `2G` (binary units) → bytes; ScenarioError otherwise."""
    match = _BYTES.match(text.strip())
    if match is None:
        raise ScenarioError("expected a byte count such as 1048576, 512M or 2G")
    return int(match[1]) * _UNITS[match[2].lower()]


def _byte_count(args: list[str]) -> int:
    return parse_byte_count(args[0] if args else "")


def _size(args: list[str]) -> tuple[int, int]:
    match = _SIZE.match(args[0]) if args else None
    if match is None:
        raise ScenarioError("size:WxH needs two integers, e.g. size:640x480")
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= _MAX_DIMENSION and 1 <= height <= _MAX_DIMENSION):
        raise ScenarioError(f"size must be within 1..{_MAX_DIMENSION}")
    return width, height


def _choice(args: list[str], allowed: Iterable[str]) -> str:
    options = tuple(allowed)
    if not args or args[0] not in options:
        raise ScenarioError(f"expected one of {', '.join(options)}")
    return args[0]


_Apply = Callable[[Scenario, list[str]], Scenario]
_rep = dataclasses.replace


def _outcome(value: Outcome) -> _Apply:
    return lambda s, _a: _rep(s, outcome=value)


_FORMATS: Final = ("png", "jpeg", "webp", "mp4", "mp3", "wav", "bin")
_SHAPES: Final = ("string", "list", "object", "data")

_TOKENS: Final[Mapping[str, _Apply]] = {
    "success": _outcome("success"),
    "fail": _outcome("fail"),
    "moderation": _outcome("moderation"),
    "filtered": _outcome("filtered"),
    "expired": _outcome("expired"),
    "create_failed": _outcome("create_failed"),
    "callback_exception": _outcome("callback_exception"),
    "stuck": lambda s, _a: _rep(s, stuck=True),
    "unknown_status": lambda s, _a: _rep(s, unknown_status=True),
    "polls": lambda s, a: _rep(s, polls=_int(a, 0, low=1)),
    "seconds": lambda s, a: _rep(s, seconds=_float(a)),
    "multi": lambda s, a: _rep(s, outputs=_int(a, 0, 2, low=1)),
    "shape": lambda s, a: _rep(s, shape=cast(Shape, _choice(a, _SHAPES))),
    "format": lambda s, a: _rep(s, fmt=cast(MediaFormat, _choice(a, _FORMATS))),
    "size": lambda s, a: _rep(s, size=_size(a)),
    "duration": lambda s, a: _rep(s, duration_s=max(0.1, _float(a))),
    "large": lambda s, a: _rep(s, large_bytes=_byte_count(a)),
    "static": lambda s, _a: _rep(s, static=True),
    "predict_time": lambda s, a: _rep(s, predict_time=_float(a)),
    "submit_error": lambda s, a: _rep(s, submit_error=_status(a)),
    "submit_slow": lambda s, a: _rep(s, submit_slow_s=_float(a)),
    "submit_malformed": lambda s, _a: _rep(s, submit_malformed=True),
    "poll_error": lambda s, a: _rep(
        s, poll_error=FaultPlan(status=_status(a), count=_int(a, 1, 1))
    ),
    "poll_slow": lambda s, a: _rep(
        s, poll_slow_s=_float(a), poll_slow_count=_int(a, 1, low=1) if len(a) > 1 else None
    ),
    "poll_malformed": lambda s, a: _rep(s, poll_malformed=_int(a, 0, 1, low=1)),
    "cdn_error": lambda s, a: _rep(s, cdn_error=FaultPlan(status=_status(a), count=_int(a, 1, 1))),
    "cdn_slow": lambda s, a: _rep(s, cdn_slow_s=_float(a)),
    "cdn_truncate": lambda s, a: _rep(s, cdn_truncate=_int(a, 0, 1, low=1)),
    "cdn_wrong_type": lambda s, _a: _rep(s, cdn_wrong_type=True),
}

TOKEN_NAMES: Final = tuple(_TOKENS)


def tokens_in_text(text: object) -> str:
    """The `[sim:...]` selectors embedded in a prompt-like string, joined for `parse`."""
    if not isinstance(text, str) or "[sim:" not in text:
        return ""
    return " ".join(_PROMPT_TAG.findall(text))


def parse(*sources: object, base: Scenario | None = None) -> Scenario:
    """Fold the tokens of every source (strings; other types are a client error) into a Scenario."""
    scenario = base or Scenario()
    for source in sources:
        if source is None or source == "":
            continue
        if not isinstance(source, str):
            raise ScenarioError("sim_scenario must be a string")
        for token in _SPLIT.split(source.strip()):
            if token:
                scenario = _apply(scenario, token)
    return scenario


def _apply(scenario: Scenario, token: str) -> Scenario:
    name, _, rest = token.partition(":")
    handler = _TOKENS.get(name.lower())
    if handler is None:
        raise ScenarioError(f"unknown sim scenario token {token!r}")
    try:
        return handler(scenario, rest.split(":") if rest else [])
    except ScenarioError as exc:
        raise ScenarioError(f"bad sim scenario token {token!r}: {exc}") from None
