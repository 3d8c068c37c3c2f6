"""Ingest throughput and memory: runs the storage engineer's ``bench/bench_ingest.py``.

That script owns the measurement (a loopback file server in its own process, ingest against
``curl | sha256sum`` on the same bytes, RSS growth on a 2 GiB result); here it is only run as
a child process, so its RSS is its own, and its ``name: value`` lines are passed on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.procs import ROOT
from bench.report import Recorder, Value

SCRIPT = ROOT / "bench" / "bench_ingest.py"
METADATA_SCRIPT = ROOT / "bench" / "bench_metadata.py"  # same protocol, see its docstring


def parse_value(text: str) -> Value:
    """Numbers as numbers (so the summary formats them alike), anything else verbatim."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


def run(rec: Recorder, *args: str, script: Path = SCRIPT) -> None:
    """Run ``script`` (default: the ingest benchmark) and record its ``name: value`` lines."""
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        name, sep, value = line.rstrip("\n").partition(": ")
        if line.startswith("#") or not sep:
            rec.note(line.rstrip("\n").lstrip("# "))
        else:
            rec.emit(name, parse_value(value))
    if proc.wait() != 0:
        raise RuntimeError(f"{script.name} exited with {proc.returncode}")
