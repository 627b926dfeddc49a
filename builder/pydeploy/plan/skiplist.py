"""The one list of files pydeploy skips, shared by every place that walks a project.

The app layer (appfiles), the builder's inputs and content hashes (depinputs), app
detection (detect), the ejected Dockerfile and its .dockerignore (dockerfile) and the
default excludes (plan) all read from here. builder_script.py runs stdlib-only inside a
container, so it gets its directory names in the job document instead of importing this.
"""

from __future__ import annotations

VCS_DIRS = (".git", ".hg", ".svn")
CACHE_DIRS = (
    "__pycache__",
    "node_modules",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
)
# Build output of setuptools & co; only skipped next to a pyproject.toml/setup.py when
# walking package sources (a package may have its own `build/` subpackage).
BUILD_OUTPUT_DIRS = ("build", "dist")

# Directories no walk descends into: VCS metadata, the project's virtualenv, caches.
# (Walkers also skip any directory holding a pyvenv.cfg: a virtualenv under any name.)
SKIP_DIRS = frozenset({*VCS_DIRS, ".venv", *CACHE_DIRS})

# Never in any layer nor sent to a builder, whatever the config says: a leaked .env or
# .git is worse than a missing file.
NEVER = (
    *(f"{name}/" for name in VCS_DIRS),
    ".env",
    ".env.*",
    ".venv/",
    "__pycache__/",
    "*.py[cod]",
)

# Credential-shaped files (gitignore patterns, any depth): out of the app layer by default;
# `tool.pydeploy.include` can bring one back, with a warning.
CREDENTIALS = (
    ".aws/",
    ".ssh/",
    ".gnupg/",
    ".kube/",
    "**/.docker/config.json",
    ".dockercfg",
    ".azure/",
    "**/.config/gcloud/",
    ".terraform/",
    "*.tfstate",
    "*.tfstate.backup",
    "*.tfvars",
    ".netrc",
    ".pypirc",
    ".npmrc",
    ".yarnrc.yml",
    ".git-credentials",
    ".pgpass",
    ".envrc",
    ".htpasswd",
    ".vault-token",
    "credentials.json",
    "client_secret*.json",
    ".*_history",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
)
