"""`tool.pydeploy.app`: an app object (`module:attribute`) or an app factory's call
(`module:create_app()`, `module:create_app("production", debug=False)`).

The grammar is gunicorn's: a factory is named by a simple name and its arguments are
literals, parsed with `ast` and never evaluated. The parser is the builder script's
(payload/builder_script.py, stdlib-only, run inside the builder), so the config check,
the app check and the server agree on what a target means.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydeploy.payload.builder_script import TargetError, parse_target

__all__ = ["AppTarget", "TargetError", "parse"]


@dataclass(frozen=True)
class AppTarget:
    text: str  # as written: gunicorn is given this
    module: str
    attribute: str  # dotted; for a factory, its name
    factory: bool  # a call: the server calls it once per worker and serves the result
    arguments: bool  # the call passes arguments (uvicorn's --factory cannot)

    @property
    def reference(self) -> str:
        """`module:attribute`, without the call (uvicorn's `--factory` form)."""
        return f"{self.module}:{self.attribute}"


def parse(text: str) -> AppTarget:
    """Raises TargetError (a ValueError) saying what is wrong with `text`."""
    module, attributes, call = parse_target(text)
    return AppTarget(
        text=text,
        module=module,
        attribute=".".join(attributes),
        factory=call is not None,
        arguments=bool(call and (call[0] or call[1])),
    )
