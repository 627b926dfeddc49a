"""Suite-wide pytest wiring: everything under tests/integration is an integration test.

Marking by directory (not by hand) means no engine-needing test can slip into the unit
run unmarked, and `pytest -m "not integration"` is always the engine-free subset.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    """A shell without job control starts background commands with SIGINT ignored, and
    an ignored signal is inherited across exec: the commands the suite starts would then
    ignore the Ctrl-C its tests send them (pydeploy rightly leaves an inherited SIG_IGN
    alone). A handler, unlike SIG_IGN, is reset to the default in every child, so the
    suite's children get SIGINT as a terminal's foreground job does."""
    del config
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # A child resolves a relative PYTHONPATH (`PYTHONPATH=builder`) against its own working
    # directory: a CLI run in a temporary project would lose it and import whatever
    # pydeploy is installed instead of this tree's.
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if any(entries):
        os.environ["PYTHONPATH"] = os.pathsep.join(str(Path(e).resolve()) for e in entries if e)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def pytest_report_header(config: pytest.Config) -> str:
    ci = os.environ.get("CI", "")
    policy = "fail" if ci.strip().lower() in {"true", "1"} else "skip"
    return f"pydeploy: missing engine/registry/base image -> {policy} (CI={ci!r})"
