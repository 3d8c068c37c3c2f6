"""Exceptions raised by provider adapters: "we could not learn the job's state".

A generation that failed at the provider is *not* an exception; it is a
``PollResult(state=FAILED)``. The tree::

    ProviderError                    retryable = False
    ├── ProviderUnavailable          retryable: network error, timeout, 5xx
    │   ├── ProviderConnectError     retryable: the request never reached the provider (safe
    │   │                            even for a submit: nothing can have been created)
    │   └── ProviderRateLimited      retryable: 429 / vendor rate-limit code; .retry_after_s
    ├── ProviderAuthError            not a job failure: bad/missing credentials -> pause provider
    ├── ProviderRejected             permanent: 400/422, invalid params, out of credits
    ├── ProviderProtocolError        retryable a few times: malformed JSON, schema drift
    ├── UnknownProvider              permanent: no adapter registered under that name
    └── ProviderPluginError          start-up: an entry-point plugin failed to load

Foreign exceptions (httpx, pydantic) are translated at the adapter edge with ``raise … from``.
"""

from __future__ import annotations

from typing import ClassVar


class ProviderError(Exception):
    """Base of every adapter error; ``retryable`` tells the poller what to do."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str = "", snippet: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.snippet = snippet  # a short, secret-free excerpt of the offending reply

    def __str__(self) -> str:
        return self.message if not self.snippet else f"{self.message}: {self.snippet}"


class ProviderUnavailable(ProviderError):
    """Transient: connection error, timeout or a 5xx. Retry with backoff."""

    retryable = True


class ProviderConnectError(ProviderUnavailable):
    """The request never reached the provider (DNS, connect refused, connect timeout).

    Unlike other transient errors this one is *unambiguous* for a submit: nothing was created,
    so the poller may submit again.
    """


class ProviderRateLimited(ProviderUnavailable):
    """The provider asked us to slow down (429 or a vendor's rate-limit code)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        retry_after_s: float | None = None,
        pause_provider: bool = False,
        snippet: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, snippet=snippet)
        self.retry_after_s = retry_after_s
        # True when the vendor locks out the whole account (Stability: 60 s on any 429).
        self.pause_provider = pause_provider


class ProviderAuthError(ProviderError):
    """Credentials missing, invalid or forbidden: a configuration problem, not a job failure."""


class ProviderRejected(ProviderError):
    """The provider refused the request for good (bad input, out of credits, not found)."""


class ProviderProtocolError(ProviderError):
    """The reply could not be understood (malformed JSON, schema drift).

    Retryable a few times (a proxy hiccup looks like this too); the poller fails the job with
    the snippet once the job's error budget is spent.
    """

    retryable = True


class UnknownProvider(ProviderError):
    """No adapter is registered under the job's ``provider_id``."""


class ProviderPluginError(ProviderError):
    """A provider plugin (entry point ``media_poller.providers``) is broken: a start-up error.

    The message names every failing entry point and why, so an operator can fix or remove it.
    """
