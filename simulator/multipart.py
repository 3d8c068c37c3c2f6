"""Just enough multipart/form-data parsing for Stability's submit endpoints.

Stability accepts only multipart bodies (even without files), so the fake does too: the
daemon's adapter must send what the real API expects, and this parser is what checks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

_BOUNDARY: Final = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_DISPOSITION_PARAM: Final = re.compile(r';\s*(name|filename)="((?:[^"\\]|\\.)*)"', re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Form:
    """Text fields and file parts (name → bytes) of one form submission."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def boundary_of(content_type: str) -> str:
    """The boundary of a multipart/form-data Content-Type, else MultipartError."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise MultipartError("content-type must be multipart/form-data")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MultipartError("multipart/form-data without a boundary")
    return match[1]


def _part(raw: bytes, form: Form) -> None:
    head, sep, content = raw.partition(b"\r\n\r\n")
    if not sep:
        raise MultipartError("part without a header block")
    headers = head.decode("utf-8", "replace").split("\r\n")
    disposition = next((h for h in headers if h.lower().startswith("content-disposition:")), None)
    if disposition is None:
        raise MultipartError("part without Content-Disposition")
    params = {k.lower(): v for k, v in _DISPOSITION_PARAM.findall(disposition)}
    name = params.get("name")
    if not name:
        raise MultipartError("part without a name")
    if "filename" in params:
        form.files[name] = content
    else:
        form.fields[name] = content.decode("utf-8", "replace")


def parse_form(content_type: str, body: bytes) -> Form:
    """Split a multipart body into fields and files."""
    delimiter = b"--" + boundary_of(content_type).encode("latin-1")
    sections = body.split(delimiter)
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise MultipartError("multipart body is missing its closing boundary")
    form = Form()
    for section in sections[1:-1]:
        if not section.startswith(b"\r\n") or not section.endswith(b"\r\n"):
            raise MultipartError("malformed multipart section")
        _part(section[2:-2], form)
    return form
