"""The one list of files pydeploy skips, shared by every place that walks a project.

The app layer (appfiles), the builder's inputs and content hashes (depinputs), app
detection (detect), the ejected Dockerfile and its .dockerignore (dockerfile) and the
default excludes (plan) all read from here: each walker's set is a named composition
below, so every name appears once. builder_script.py runs stdlib-only inside a
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

# Virtualenvs under their usual names; a directory holding VENV_CONFIG is one under any
# name, and walkers that can look inside a directory skip those too.
VENV_DIRS = (".venv", "venv")
VENV_CONFIG = "pyvenv.cfg"
# setuptools' metadata directories end in this; no walk descends into one.
EGG_INFO = ".egg-info"

# Directories no walk descends into: VCS metadata, the project's virtualenv, caches.
# The app layer and the builder's copies use this set (builder_script gets it in the job).
SKIP_DIRS = frozenset({*VCS_DIRS, ".venv", *CACHE_DIRS})
# Content hashes of local packages (depinputs.content_digest): nor any build output.
HASH_SKIP_DIRS = SKIP_DIRS | {*VENV_DIRS, *BUILD_OUTPUT_DIRS}
# App detection (detect): nor what never holds the app itself.
DETECT_SKIP_DIRS = HASH_SKIP_DIRS | {"tests", "site-packages"}


def is_egg_info(name: str) -> bool:
    return name.endswith(EGG_INFO)


# Never in any layer nor sent to a builder, whatever the config says: a leaked .env or
# .git is worse than a missing file. Each with why, for the error `include` of one gets.
NEVER_WHY = {
    **{
        f"{name}/": "version-control metadata (history, remotes, maybe tokens)" for name in VCS_DIRS
    },
    ".env": "an environment file, which holds secrets",
    ".env.*": "an environment file, which holds secrets",
    ".venv/": "the host's virtualenv (the image builds its own)",
    "__pycache__/": "bytecode caches (the image compiles its own)",
    "*.py[cod]": "compiled bytecode (the image compiles its own)",
}
NEVER = tuple(NEVER_WHY)

# Out of the app layer by default (plan); `include` brings these back (but never NEVER).
# appfiles adds CREDENTIALS on top, which `include` overrides only with a warning.
DEFAULT_EXCLUDES = (
    *NEVER,
    "*.env",
    *(f"{name}/" for name in VENV_DIRS if f"{name}/" not in NEVER),
    *(f"{name}/" for name in (*CACHE_DIRS, *BUILD_OUTPUT_DIRS)),
    ".coverage",
    ".coverage.*",
    "htmlcov/",
    f"*{EGG_INFO}/",
    ".DS_Store",
    ".idea/",
    ".vscode/",
    ".pydeploy/",  # files `pydeploy dockerfile --write` generates for docker build
)
# Also out of the app layer with `exclude-tests`.
TEST_EXCLUDES = ("tests/", "test/", "test_*.py", "*_test.py", "conftest.py")

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
