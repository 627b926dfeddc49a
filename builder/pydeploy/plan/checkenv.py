"""`[tool.pydeploy.check-env]` values never ship: the copy of pyproject.toml the app layer
(and the builder) gets has each of them replaced by `REDACTED`.

Only a string literal that is the value of a check-env name, and decodes to exactly that
value, is replaced; the result is parsed again, and a value it still holds (a multi-line
string, a quoted key) is a ConfigError rather than a placeholder in the image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pydeploy.config.toml import parse_toml
from pydeploy.errors import ConfigError
from pydeploy.oci.entries import FileEntry

REDACTED = "****"
# A one-line TOML basic or literal string.
_STRING = r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\''


def redact(text: str, values: Mapping[str, str], where: str) -> str:
    """`text` (a pyproject.toml) without the check-env `values` (name -> value)."""
    for name, value in values.items():
        pattern = re.compile(rf"(^|[\s{{,.]){re.escape(name)}(\s*=\s*)({_STRING})", re.MULTILINE)

        def blank(match: re.Match[str], value: str = value) -> str:
            decoded = parse_toml(f"v = {match[3]}", where).get("v")
            if decoded != value:
                return match[0]
            return match[0][: match.start(3) - match.start()] + f'"{REDACTED}"'

        text = pattern.sub(blank, text)
    table = parse_toml(text, where).get("tool", {}).get("pydeploy", {}).get("check-env", {})
    left = sorted(name for name, value in table.items() if value != REDACTED)
    if left:
        raise ConfigError(
            f"{where}: the value of `tool.pydeploy.check-env` {', '.join(left)} cannot be left "
            "out of the pyproject.toml the image ships (check-env values never go into an "
            "image).",
            hint='Write each check-env value as a one-line string on its own: NAME = "value".',
        )
    return text


def shipped_pyproject(entry: FileEntry, values: Mapping[str, str]) -> FileEntry:
    """The app layer's pyproject.toml entry without the check-env values."""
    raw = entry.data if entry.data is not None else (entry.source or Path()).read_bytes()
    where = str(entry.source or entry.path)
    text = redact(raw.decode("utf-8"), values, where)
    return FileEntry(
        entry.path, "file", entry.mode, uid=entry.uid, gid=entry.gid, data=text.encode()
    )
