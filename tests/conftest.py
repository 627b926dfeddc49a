"""Suite-wide pytest wiring: everything under tests/integration is an integration test.

Marking by directory (not by hand) means no engine-needing test can slip into the unit
run unmarked, and `pytest -m "not integration"` is always the engine-free subset.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def pytest_report_header(config: pytest.Config) -> str:
    ci = os.environ.get("CI", "")
    policy = "fail" if ci.strip().lower() in {"true", "1"} else "skip"
    return f"pydeploy: missing engine/registry/base image -> {policy} (CI={ci!r})"
