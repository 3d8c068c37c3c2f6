"""Exceptions raised by provider adapters: "we could not learn the job's state".

A generation that failed at the provider is *not* an exception; it is a
``PollResult(state=FAILED)``. The tree::

    ProviderError                    retryable = False
    ├── ProviderUnavailable          retryable: network error, timeout, 5xx; .retry_after_s
    │   ├── ProviderConnectError     retryable: the request never reached the provider (safe
    │   │                            even for a submit: nothing can have been created)
    │   ├── ProviderNotVisibleYet    retryable: a 404 just after the submit; no error budget
    │   ├── ProviderBusy             retryable: the provider answered that it took nothing
    │   │                            (maintenance); as safe for a submit as a connect error
    │   └── ProviderRateLimited      retryable: 429 / vendor rate-limit code
    ├── ProviderAuthError            not a job failure: bad/missing credentials -> pause provider
    ├── ProviderRejected             permanent: 400/422, invalid params, out of credits
    │   └── ProviderModerated        permanent: content moderation refused the request
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
    """Transient: connection error, timeout or a 5xx. Retry with backoff.

    ``retry_after_s`` carries the provider's own hint (a ``Retry-After`` header on a 503, the
    wait a 429 names) so the poller waits at least that long; ``None`` when it gave none.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        snippet: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, snippet=snippet)
        self.retry_after_s = retry_after_s


class ProviderConnectError(ProviderUnavailable):
    """The request never reached the provider (DNS, connect refused, connect timeout).

    Unlike other transient errors this one is *unambiguous* for a submit: nothing was created,
    so the poller may submit again.
    """


class ProviderBusy(ProviderUnavailable):
    """The provider answered that it accepted nothing for now (e.g. Suno's 455 maintenance).

    Like a connect error this is *unambiguous* for a submit: the reply says no job was
    created, so the poller may submit again later instead of failing the job as "submit
    outcome unknown".
    """


class ProviderNotVisibleYet(ProviderUnavailable):
    """A 404 within 30 s of the submit (DESIGN §10), counted from when the provider returned
    the job id: the vendor does not show the new job yet. Retried like any transient error,
    but the adapter's window bounds the retries, so the poller spends no error budget on them
    (a 5xx in that window still does).
    """


class ProviderRateLimited(ProviderUnavailable):
    """The provider asked us to slow down (429 or a vendor's rate-limit code).

    Every 429 pauses the provider for every replica (DESIGN §3) for ``retry_after_s``, or a
    default when the vendor names no wait.
    """


class ProviderAuthError(ProviderError):
    """Credentials missing, invalid or forbidden: a configuration problem, not a job failure."""


class ProviderRejected(ProviderError):
    """The provider refused the request for good (bad input, out of credits, not found)."""


class ProviderModerated(ProviderRejected):
    """Content moderation refused the request; the message starts with ``moderation:``.

    Its own class because the job's error is the vendor's reason as is (DESIGN §10
    "moderation: …") and a refusal costs nothing (Stability charges no credits for it).
    """


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
