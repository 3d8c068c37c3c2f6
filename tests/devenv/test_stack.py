"""`make run`'s choice between the simulator and the real APIs (devenv.stack)."""

from __future__ import annotations

import pytest

from devenv.stack import KEY_VARIABLES, provider_keys_set
from providers.registry import BUILTIN_PROVIDERS


def _key_names() -> set[str]:
    """Every environment name a built-in provider accepts its API key under."""
    names: set[str] = set()
    for spec in BUILTIN_PROVIDERS.values():
        cls = spec.settings_cls
        field = cls.model_fields["api_key"]
        names.add(f"{cls.model_config.get('env_prefix', '')}API_KEY".upper())
        if isinstance(field.validation_alias, str):
            names.add(field.validation_alias.upper())
    return names


def test_every_accepted_key_name_counts_as_a_key() -> None:
    """README: `make run` uses the simulator only "when no provider key is set"; a key
    under a name the settings accept (REPLICATE_API_KEY) must not be overridden by it."""
    assert _key_names() == set(KEY_VARIABLES)


@pytest.mark.parametrize("name", sorted(_key_names()))
def test_a_key_under_any_name_means_the_real_api(name: str) -> None:
    assert provider_keys_set({name: "real-key"})
    assert not provider_keys_set({name: "  "})
    assert not provider_keys_set({"REPLICATE_BASE_URL": "https://api.replicate.com"})
