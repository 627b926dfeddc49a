"""pydeploy: build slim, reproducible, non-root container images for Python web apps."""

# The one statement of the version (pyproject.toml reads it: [tool.hatch.version]); a
# literal, so `pydeploy --version` starts without importing importlib.metadata.
__version__ = "0.1.0"
