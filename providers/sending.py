"""Has a submit's create request gone on the wire yet? The answer decides what a cut-off
submit leaves behind.

When a step is cancelled (shutdown after its grace, a lost lease) while its create call is
still running after the cancel grace, the daemon cuts the call. If the request may have
reached the provider, the job keeps its submit mark and ends "submit outcome unknown" (a
resubmit could bill twice). But a call cut *before* its request left, Stability still
fetching the input files, say, created nothing: the mark can go and the next claim submits
again.

Only an adapter can know that, so the signal is opt-in and fail-safe: the daemon opens a
`watch_sends` around ``submit``; `providers._http.Edge.request` notes every request that
can change state (anything but GET/HEAD/OPTIONS) just before handing it to the client; and
the daemon trusts "nothing sent" only from an adapter whose class sets ``reports_sends =
True``, a promise that every request of its ``submit`` goes through an ``Edge``. An adapter
that does not make the promise keeps the old, ambiguous behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["SendWatch", "note_request", "reports_sends", "watch_sends"]

_READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(slots=True)
class SendWatch:
    """Set to True when a state-changing request is handed to the HTTP client."""

    sent: bool = False


_WATCH: ContextVar[SendWatch | None] = ContextVar("media_poller_send_watch", default=None)


@contextmanager
def watch_sends() -> Iterator[SendWatch]:
    """Watch the requests made in this context (tasks started inside it share the watch)."""
    watch = SendWatch()
    token = _WATCH.set(watch)
    try:
        yield watch
    finally:
        _WATCH.reset(token)


def note_request(method: str) -> None:
    """Called just before a request is sent; read-only methods create nothing."""
    watch = _WATCH.get()
    if watch is not None and method.upper() not in _READ_ONLY:
        watch.sent = True


def reports_sends(adapter: object) -> bool:
    """Whether ``adapter`` promises that its submit's requests all go through an ``Edge``."""
    return getattr(type(adapter), "reports_sends", False) is True
