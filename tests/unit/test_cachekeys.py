"""The recipe versions and cache names, pinned: each keys or finds caches that already
exist on users' engines and hosts, so a change must be deliberate (it rebuilds or
orphans them). Edit a value here only together with cachekeys.py, on purpose."""

from __future__ import annotations

from pydeploy import cachekeys

PINNED = {
    "RECIPE_VERSION": "1",
    "UV_VERSION": "0.13.9",
    "CHECK_RECIPE": "app-check-v3",
    "PROJECT_RECIPE": "project-layer-v1",
    "HOST_CHECK_RECIPE": "host-check-v1",
    "BUILD_COMMANDS_RECIPE": "build-commands-v1",
    "DEPENDENCY_LAYERS_RECIPE": "dependency-layers-v1",
    "SETUID_RECIPE": "no-setuid-v2",
    "SYSTEM_LAYER_RECIPE": "system-layer-v1",
    "SECRET_SCAN_RECIPE": "secretscan-v1",
    "BASE_FACTS_RECIPE": "base-facts-v1",
    "SHARED_LIBS_RECIPE": "shared-libs-v1",
    "UNCHANGED_RECIPE": "unchanged-v1",
    "VOLUME_PREFIX": "pydeploy-",
    "CACHE_VOLUME": "pydeploy-cache",
    "VENV_VOLUME_PREFIX": "pydeploy-venv-",
    "APT_VOLUME_PREFIX": "pydeploy-apt-",
    "PYTHON_VOLUME_PREFIX": "pydeploy-python-",
    "BUILDER_REPOSITORY": "pydeploy-builder",
    "MARKER": ".pydeploy-complete",
    "USED": ".pydeploy-used",
    "BUILD_LABEL": "pydeploy.build",
    "OWNER_LABEL": "pydeploy.owner",
    "CHECK_IMAGE_LABEL": "pydeploy.check-image",
    "RUN_LABEL": "pydeploy.run",
    "LABEL_KEY": "pydeploy.builder.key",
    "LABEL_PACKAGES": "pydeploy.builder.packages",
    "LABEL_BUILDER_BASE": "pydeploy.builder.base",
    "LABEL_PYTHON": "pydeploy.python",
    "LABEL_PYTHON_BASE": "pydeploy.python.base",
    "LABEL_VENV": "pydeploy.venv",
    "LABEL_VENV_KEY": "pydeploy.venv.key",
    "LABEL_OWNER": "pydeploy.venv.build",
    "LABEL_OWNER_PROCESS": "pydeploy.venv.owner",
    "LABEL_CLAIMED": "pydeploy.venv.claimed",
    "LABEL_CACHE": "pydeploy.cache",
    "INDEX_DOCKER_SAVE": "docker-save",
    "INDEX_BASE_ACCOUNTS": "base-accounts",
    "INDEX_BASE_CONFIG": "base-config",
    "INDEX_BASE_FACTS": "base-facts",
    "INDEX_BASE_ARCHIVE": "base-archive",
    "INDEX_APP_CHECK": "app-check",
    "INDEX_APP_CHECK_LAST": "app-check-last",
    "INDEX_IMAGE_LAYERS": "image-layers",
    "INDEX_PRELOAD": "preload",
    "PRELOAD_REPOSITORY": "pydeploy-preload",
    "INDEX_PROJECT_LAYER": "project-layer",
    "INDEX_BUILD_LAYER": "build-layer",
    "INDEX_VENV_LAST": "venv-last",
    "INDEX_VENV_LAYERS": "venv-layers",
    "INDEX_DEPENDENCY_LAYER": "dependency-layer",
    "INDEX_GZIP": "gzip",
    "INDEX_SETUID": "no-setuid",
    "INDEX_SYSTEM_LAYER": "system-layer",
    "INDEX_SECRET_SCAN": "secret-scan",
    "INDEX_SHARED_LIBS": "shared-libs",
    "INDEX_SBOM_CONTENTS": "sbom-contents",
    "SBOM_CONTENTS_RECIPE": "sbom-contents-v1",
    "UNCHANGED_DIR": "unchanged",
    "BASE_REPOSITORY": "pydeploy-base",
    "HOST_VENVS_DIR": "venvs",
    "REGISTRY_CACHE_FORMAT": "1",
    "REGISTRY_CACHE_TAG_PREFIX": "pydeploy-cache-",
    "INDEX_REGISTRY_RECORD": "registry-record",
    "INDEX_HOST_NEEDS_BUILDER": "host-needs-builder",
}


def test_every_name_and_recipe_is_pinned() -> None:
    found = {name: getattr(cachekeys, name) for name in dir(cachekeys) if name.isupper()}
    assert found == PINNED


def test_volume_names_share_the_prefix_prune_lists_by() -> None:
    for name in ("CACHE_VOLUME", "VENV_VOLUME_PREFIX", "APT_VOLUME_PREFIX", "PYTHON_VOLUME_PREFIX"):
        assert getattr(cachekeys, name).startswith(cachekeys.VOLUME_PREFIX)
