"""Programs copied into containers: the launcher, the builder script and the gunicorn worker
classes. The host never runs them in place; it reads their bytes with `source`. Stdlib-only,
like the launcher and builder script themselves, because a bare interpreter imports them."""

from importlib import resources


def source(name: str) -> bytes:
    """The bytes of the payload file `name` (e.g. "launcher.py"), as shipped in the wheel."""
    return resources.files(__name__).joinpath(name).read_bytes()
