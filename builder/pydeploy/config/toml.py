"""TOML files (pyproject.toml, uv.lock, pylock.toml) read in one place: the stdlib's tomllib,
or tomli on Python 3.10, with every failure a ConfigError naming the file."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydeploy.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def read_toml(path: Path) -> dict[str, Any]:
    """Read and parse a TOML file (pyproject.toml, uv.lock, pylock.toml); every failure
    is a ConfigError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from None
    return parse_toml(raw, str(path))


def parse_toml(raw: bytes | str, where: str) -> dict[str, Any]:
    """TOML text (UTF-8 bytes or str) as a dict; ConfigError for anything else."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff"))
            raise ConfigError(
                f"{where} is not UTF-8 text"
                + (" (it is UTF-16)" if utf16 else f": byte {exc.start} is {raw[exc.start]:#04x}")
                + ".",
                hint="TOML files are UTF-8: save it as UTF-8 (without a byte-order mark).",
            ) from None
    else:
        text = raw
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where_at = re.search(r"line (\d+), column (\d+)", str(exc))
        position = f"line {where_at[1]}, column {where_at[2]}" if where_at else "unknown position"
        reason = re.sub(r"\s*\(at .*\)$", "", str(exc))
        bom = " (it starts with a byte-order mark)" if text.startswith("\ufeff") else ""
        raise ConfigError(
            f"{where} is not valid TOML at {position}{bom}: {reason}.",
            hint="Fix the syntax there; `pydeploy check` re-validates.",
        ) from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table.
        raise ConfigError(
            f"{where} nests arrays or inline tables too deeply to read.",
            hint="Flatten the nesting; no setting pydeploy reads is nested that deep.",
        ) from None
    return data
