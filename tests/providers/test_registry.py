"""Registry: built-ins, entry-point plugins (good and broken), and the client factory."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from collections.abc import Iterator

import httpx
import pytest

from providers.base import Provider
from providers.errors import ProviderPluginError
from providers.registry import (
    BUILTIN_PROVIDERS,
    ENTRY_POINT_GROUP,
    Hosting,
    ProviderSpec,
    load_providers,
    make_client,
)
from providers.replicate import ReplicateSettings
from providers.settings import ProviderSettings
from tests.providers import example_adapter
from tests.providers.conftest import TOKENS

PLUGIN_MODULE = "media_poller_test_plugins"


def test_builtins_are_the_three_vendors_sorted() -> None:
    assert list(BUILTIN_PROVIDERS) == ["replicate", "stability", "suno"]
    assert list(BUILTIN_PROVIDERS) == sorted(BUILTIN_PROVIDERS)
    for name, spec in BUILTIN_PROVIDERS.items():
        assert spec.name == name
        assert issubclass(spec.settings_cls, ProviderSettings)


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(BUILTIN_PROVIDERS))
async def test_builtins_build_adapters_that_satisfy_the_protocol(name: str) -> None:
    spec = BUILTIN_PROVIDERS[name]
    settings = spec.settings_cls.from_env({})
    async with make_client(spec, settings) as client:
        adapter = spec.build(settings, client)
        assert isinstance(adapter, Provider)
        assert adapter.name == name


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(BUILTIN_PROVIDERS))
async def test_the_daemon_builds_builtins_through_create(name: str) -> None:
    """`create` uses `build_hosted` when a spec has one, else plain `build`."""
    spec = BUILTIN_PROVIDERS[name]
    settings = spec.settings_cls.from_env({})
    async with make_client(spec, settings) as client:
        adapter = spec.create(settings, client, Hosting(max_inline_bytes=1024))
        assert isinstance(adapter, Provider)
        assert adapter.name == name


def test_a_plugin_without_build_hosted_is_built_with_build() -> None:
    built: list[object] = []

    def build(settings: ProviderSettings, client: httpx.AsyncClient) -> Provider:
        built.append((settings, client))
        return example_adapter.build(settings, client)

    spec = ProviderSpec(name="acme", settings_cls=example_adapter.AcmeSettings, build=build)
    settings = example_adapter.AcmeSettings.from_env({})
    client = httpx.AsyncClient()
    spec.create(settings, client, Hosting(max_inline_bytes=1))
    assert built == [(settings, client)]


@pytest.mark.anyio
async def test_build_refuses_settings_of_another_provider() -> None:
    settings = ReplicateSettings.from_env({})
    async with make_client(BUILTIN_PROVIDERS["suno"], settings) as client:
        with pytest.raises(TypeError, match="SunoSettings"):
            BUILTIN_PROVIDERS["suno"].build(settings, client)


def test_spec_names_must_fit_the_column() -> None:
    with pytest.raises(ValueError, match="provider name"):
        ProviderSpec(name="Bad Name", settings_cls=ReplicateSettings, build=example_adapter.build)


@pytest.fixture
def plugin_module() -> Iterator[types.ModuleType]:
    """A fake installed plugin module exposing good and bad objects."""
    module = types.ModuleType(PLUGIN_MODULE)
    module.SPEC = example_adapter.SPEC  # type: ignore[attr-defined]
    module.NOT_A_SPEC = object()  # type: ignore[attr-defined]
    module.CLASHING = BUILTIN_PROVIDERS["suno"]  # type: ignore[attr-defined]
    sys.modules[PLUGIN_MODULE] = module
    yield module
    del sys.modules[PLUGIN_MODULE]


def entry_point(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_no_plugins_means_the_builtins() -> None:
    assert load_providers([]) == BUILTIN_PROVIDERS


def test_installed_entry_points_are_read() -> None:
    # Whatever is installed in this environment loads cleanly (none ship with the project).
    loaded = load_providers()
    assert set(BUILTIN_PROVIDERS) <= set(loaded)


def test_a_plugin_is_added_in_sorted_order(plugin_module: types.ModuleType) -> None:
    loaded = load_providers([entry_point("acme", f"{PLUGIN_MODULE}:SPEC")])
    assert list(loaded) == ["acme", "replicate", "stability", "suno"]
    assert loaded["acme"] is example_adapter.SPEC


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("ghost", "no_such_module_anywhere:SPEC", "failed to load: ModuleNotFoundError"),
        ("acme", f"{PLUGIN_MODULE}:MISSING", "failed to load: AttributeError"),
        ("odd", f"{PLUGIN_MODULE}:NOT_A_SPEC", "is a object, not a ProviderSpec"),
        ("other", f"{PLUGIN_MODULE}:SPEC", "declares name 'acme'"),
        ("suno", f"{PLUGIN_MODULE}:CLASHING", "clashes with an already registered provider"),
    ],
)
def test_broken_plugins_are_reported_by_name(
    plugin_module: types.ModuleType, name: str, value: str, reason: str
) -> None:
    with pytest.raises(ProviderPluginError) as caught:
        load_providers([entry_point(name, value)])
    assert f"provider plugin {name!r} ({value})" in str(caught.value)
    assert reason in str(caught.value)


def test_every_broken_plugin_is_reported_at_once(plugin_module: types.ModuleType) -> None:
    with pytest.raises(ProviderPluginError) as caught:
        load_providers(
            [
                entry_point("ghost", "no_such_module_anywhere:SPEC"),
                entry_point("odd", f"{PLUGIN_MODULE}:NOT_A_SPEC"),
            ]
        )
    assert "'ghost'" in str(caught.value) and "'odd'" in str(caught.value)


def test_make_client_configuration() -> None:
    spec = BUILTIN_PROVIDERS["replicate"]
    settings = ReplicateSettings.from_env(
        {},
        api_key="r8_x123456789",
        base_url="https://proxy.example/replicate",
        connect_timeout_s=3,
        read_timeout_s=45,
        max_in_flight=7,
    )
    client = make_client(spec, settings)
    assert str(client.base_url) == "https://proxy.example/replicate/"
    assert client.timeout.connect == 3.0
    assert client.timeout.read == 45.0
    assert not client.follow_redirects
    assert "authorization" not in client.headers  # added per request, for our origin only


@pytest.mark.anyio
async def test_client_sends_credentials_only_to_its_own_origin() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    spec = BUILTIN_PROVIDERS["stability"]
    settings = spec.settings_cls.from_env({}, api_key=TOKENS["stability"])
    async with make_client(spec, settings, transport=httpx.MockTransport(record)) as client:
        await client.get("/v2beta/results/x")
        await client.get("https://replicate.delivery/file.png")
        await client.get("http://api.stability.ai/v2beta/results/x")  # other scheme
        await client.get("https://api.stability.ai.cdn.example/x")
    own, cdn, plain_http, lookalike = seen
    assert own.headers["authorization"] == f"Bearer {TOKENS['stability']}"
    for request in (cdn, plain_http, lookalike):
        assert "authorization" not in request.headers


@pytest.mark.anyio
async def test_custom_client_headers_are_used() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    settings = example_adapter.AcmeSettings.from_env({}, api_key=TOKENS["acme"])
    transport = httpx.MockTransport(record)
    async with make_client(example_adapter.SPEC, settings, transport=transport) as client:
        await client.get("/v1/jobs/1")
    assert seen[0].headers["x-api-key"] == TOKENS["acme"]
    assert "authorization" not in seen[0].headers


@pytest.mark.anyio
async def test_client_does_not_follow_redirects_to_other_hosts() -> None:
    seen: list[httpx.Request] = []

    def redirect(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "https://elsewhere.example/steal"})

    spec = BUILTIN_PROVIDERS["suno"]
    settings = spec.settings_cls.from_env(
        {}, api_key=TOKENS["suno"], callback_url="https://h.example/cb"
    )
    async with make_client(spec, settings, transport=httpx.MockTransport(redirect)) as client:
        response = await client.get("/api/v1/generate/record-info")
    assert response.status_code == 302
    assert len(seen) == 1
