"""docs/adding-a-provider.md: the settings snippet is the worked example's class, runnable."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from providers.settings import ProviderSettings
from tests.providers.example_adapter import AcmeSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding-a-provider.md"


def test_settings_snippet_runs_and_matches_the_example_adapter() -> None:
    """The snippet is what plugin authors copy: an attribute nothing reads (and that needs an
    import the snippet does not show) must not be in it."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    [snippet] = [b for b in blocks if "class AcmeSettings(ProviderSettings)" in b]
    names = {"ProviderSettings": ProviderSettings, "SettingsConfigDict": SettingsConfigDict}
    namespace: dict[str, object] = {**names, "Field": Field}
    exec(compile(snippet, str(DOC), "exec"), namespace)
    documented = namespace["AcmeSettings"]
    assert isinstance(documented, type) and issubclass(documented, ProviderSettings)
    assert set(vars(documented)) - set(vars(AcmeSettings)) <= {"__doc__", "__module__"}
    assert documented.model_fields.keys() == AcmeSettings.model_fields.keys()
