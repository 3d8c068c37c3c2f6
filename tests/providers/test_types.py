"""The adapter result types print no credentials."""

from __future__ import annotations

from providers.types import PollResult, PollState, RemoteOutput


def test_a_remote_outputs_repr_has_no_token_and_no_signature() -> None:
    """A same-origin output carries our ``Authorization`` header and a CDN output a signed
    query string; the dataclass repr printed both (a debug log of a result, a test failure)."""
    output = RemoteOutput(
        url="https://cdn.example/out/0.png?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=abc123",
        media_type="image/png",
        headers={"Authorization": "Bearer r8_secret_token_123"},
    )
    result = PollResult(state=PollState.SUCCEEDED, outputs=(output,))
    for shown in (repr(output), repr(result)):
        assert "r8_secret_token_123" not in shown
        assert "abc123" not in shown and "AKIAEXAMPLE" not in shown
        assert "https://cdn.example/out/0.png?…" in shown
        assert "Authorization" in shown  # which headers, not their values
