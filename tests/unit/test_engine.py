"""The engine connection without an engine: one clear message, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeploy.engine import Engine
from pydeploy.errors import EngineError


def test_no_engine_gives_one_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(EngineError) as caught:
        Engine.connect()
    message = caught.value.message
    assert caught.value.exit_code == 3
    assert f"unix://{tmp_path}/no-engine.sock" in message
    assert "DOCKER_HOST" in message
    assert "systemctl start docker" in message
    assert "\n" not in message
