"""Which providers exist and how to build them: built-ins plus entry-point plugins.

The poller reads settings with ``spec.settings_cls()``, builds one HTTP client per provider
with `make_client` and the adapter with ``spec.create(settings, client, hosting)``, which
calls ``spec.build(settings, client)`` unless the adapter also wants what the daemon lends
(`Hosting`: its download cap). Adapters never create or close the client for their own API.

Plugins ship as separate packages and declare, in their ``pyproject.toml``::

    [project.entry-points."media_poller.providers"]
    acme = "acme_media.provider:SPEC"      # a ProviderSpec named "acme"

A broken plugin stops start-up with a `ProviderPluginError` naming it, instead of silently
leaving its jobs unserved.
"""

from __future__ import annotations

import importlib.metadata
import re
import urllib.request
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass

import httpx

from providers import _http, replicate, stability, suno
from providers._http import Hosting as Hosting  # re-exported: the poller builds one
from providers.base import Provider
from providers.errors import ProviderPluginError
from providers.settings import ProviderSettings
from providers.transport import AiohttpTransport

ENTRY_POINT_GROUP = "media_poller.providers"
MAX_CONNECTIONS = 32  # per provider client
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,99}$")  # fits generation_jobs.provider_id


def bearer_headers(settings: ProviderSettings) -> dict[str, str]:
    """``Authorization: Bearer <api_key>`` (what all three built-in vendors expect)."""
    return settings.auth_headers()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSpec:
    """Everything the poller needs to serve one provider.

    ``build(settings, client)`` receives settings of ``settings_cls`` and a client made by
    `make_client`; ``client_headers(settings)`` are the credentials sent to ``base_url`` only.
    """

    name: str
    settings_cls: type[ProviderSettings]
    build: Callable[[ProviderSettings, httpx.AsyncClient], Provider]
    client_headers: Callable[[ProviderSettings], dict[str, str]] = bearer_headers
    # For adapters that use what the daemon lends (`Hosting`); None = `build` is enough.
    build_hosted: Callable[[ProviderSettings, httpx.AsyncClient, Hosting], Provider] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"provider name {self.name!r} must match {_NAME.pattern}")

    def create(
        self, settings: ProviderSettings, client: httpx.AsyncClient, hosting: Hosting
    ) -> Provider:
        """The adapter as the daemon runs it: given `hosting` if it takes it."""
        if self.build_hosted is None:
            return self.build(settings, client)
        return self.build_hosted(settings, client, hosting)


BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {  # keep sorted (a test checks it)
    "replicate": ProviderSpec(
        name="replicate", settings_cls=replicate.ReplicateSettings, build=replicate.build
    ),
    "stability": ProviderSpec(
        name="stability",
        settings_cls=stability.StabilitySettings,
        build=stability.build,
        build_hosted=stability.build_hosted,
    ),
    "suno": ProviderSpec(name="suno", settings_cls=suno.SunoSettings, build=suno.build),
}


def load_providers(
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> dict[str, ProviderSpec]:
    """Built-ins plus every plugin of `ENTRY_POINT_GROUP`, sorted by name.

    ``entry_points`` replaces the installed ones (tests). All broken plugins are reported
    together in one `ProviderPluginError`.
    """
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    specs = dict(BUILTIN_PROVIDERS)
    problems: list[str] = []
    for entry_point in sorted(entry_points, key=lambda ep: (ep.name, ep.value)):
        try:
            spec = _load_plugin(entry_point, specs)
        except ProviderPluginError as exc:
            problems.append(exc.message)
            continue
        specs[spec.name] = spec
    if problems:
        raise ProviderPluginError("; ".join(problems))
    return dict(sorted(specs.items()))


def _load_plugin(
    entry_point: importlib.metadata.EntryPoint, known: Mapping[str, ProviderSpec]
) -> ProviderSpec:
    where = f"provider plugin {entry_point.name!r} ({entry_point.value})"
    try:
        spec = entry_point.load()
    except Exception as exc:  # a plugin can fail in any way; report it, do not crash blindly
        raise ProviderPluginError(f"{where} failed to load: {type(exc).__name__}: {exc}") from exc
    if not isinstance(spec, ProviderSpec):
        raise ProviderPluginError(f"{where} is a {type(spec).__name__}, not a ProviderSpec")
    if spec.name != entry_point.name:
        raise ProviderPluginError(f"{where} declares name {spec.name!r}; use the same name")
    if spec.name in known:
        raise ProviderPluginError(f"{where} clashes with an already registered provider")
    if not issubclass(spec.settings_cls, ProviderSettings):
        raise ProviderPluginError(f"{where}: settings_cls must subclass ProviderSettings")
    return spec


class OriginScopedHeaders(httpx.Auth):
    """Adds credentials only to requests for the provider's own API origin.

    The client has a base URL and does not follow redirects, so adapters normally never
    leave it; this makes it a guarantee even if one is handed an absolute CDN URL. The
    origin is compared on the request's already parsed URL (this runs on every poll).
    """

    def __init__(self, headers: Mapping[str, str], base_url: str) -> None:
        self._headers = dict(headers)
        self._origin = _http.origin_of(base_url)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._origin is not None and _http.origin_of_parsed(request.url) == self._origin:
            request.headers.update(self._headers)
        yield request


class _NoCookies(httpx.Cookies):
    """A jar that stays empty: vendor APIs authenticate by header, not by cookie."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _CookielessClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` that neither stores nor sends cookies.

    httpx copies every response into ``urllib.request`` objects to look for cookies: 6 % of
    the daemon's CPU per poll, measured, for cookies no provider uses. A load balancer's
    affinity cookie is not needed either: each call stands alone.
    """

    _none = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, value: object) -> None:
        """Cookies given to the constructor are ignored, like the ones servers send."""


def make_client(
    spec: ProviderSpec,
    settings: ProviderSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one HTTP client for a provider's API (the caller owns and closes it).

    ``transport`` is for tests (``httpx.MockTransport``) and the loopback simulator.
    """
    # Requests beyond the pool simply queue; a few dozen connections carry thousands of
    # polls a second, and every extra one is a socket the vendor has to keep open.
    size = min(settings.max_in_flight, MAX_CONNECTIONS)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    return _CookielessClient(
        base_url=settings.base_url,
        auth=OriginScopedHeaders(spec.client_headers(settings), settings.base_url),
        headers={"User-Agent": "media-poller"},
        timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
        limits=limits,
        follow_redirects=False,
        transport=transport or _wire(limits),
    )


def _wire(limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
    """Our aiohttp transport, unless the environment names a proxy (``HTTPS_PROXY`` and
    kin): then None, i.e. httpx's own transport, which routes through it and honours
    ``NO_PROXY``; proxied polls cost more CPU, but they work."""
    if any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies()):
        return None
    return AiohttpTransport(limits=limits)
