"""Every recipe version and every name that keys or finds a cache, stated once.

Change a recipe string here and every cache it keys is rebuilt: the keys computed from
it (builder images, probe and venv volumes, host cache index entries) change, and what
the old keys named is left for `pydeploy prune`. The names (volumes, labels, the builder
repository, the records inside a venv volume, the host cache's index kinds) are how
builds, `prune` and other hosts sharing an engine find each other's caches: renaming one
orphans everything that carries the old name.

Constants only, importing nothing, so pure planning may use it as freely as the builder
stage, the engine client, the layers and `prune` do.
"""

from __future__ import annotations

# --- recipe versions --------------------------------------------------------------------

# The builder stage's recipe (stage.py, builder_script.py): part of the full builder
# image's key, the base image's probe volume and every dependency (venv) key. Bump when
# the recipe changes what lands in a builder image or a venv.
RECIPE_VERSION = "1"
# The uv the builder installs into the cache volume (`tools/uv-<version>`); part of the
# dependency key, and what an ejected Dockerfile installs.
UV_VERSION = "0.13.9"
# The app check's cached answer (interface, worker memory).
# v2: the check also measures what a worker costs (pydeploy.plan.memory).
# v3: the check runs in the runtime image; the project's wheel is cached on its own.
CHECK_RECIPE = "app-check-v3"
# The app layer with the project's own wheel (built in the builder).
PROJECT_RECIPE = "project-layer-v1"
# The app check on the build host (no engine): its program's confinement (writes refused
# outside /tmp and `writable`), the venv shim, the app layer as shipped.
HOST_CHECK_RECIPE = "host-check-v1"
# How build commands run and what of their output is kept (builder/commands.py).
BUILD_COMMANDS_RECIPE = "build-commands-v1"
# How the venv is split into dependency layers (pydeploy.layers.dependencies).
DEPENDENCY_LAYERS_RECIPE = "dependency-layers-v1"
# The layer that drops the base image's setuid/setgid bits (v2: whiteouts, not copies).
SETUID_RECIPE = "no-setuid-v2"
# The runtime system-packages layer.
SYSTEM_LAYER_RECIPE = "system-layer-v1"
# The shared-library check's answer (what the venv's ELF files miss in the runtime image
# and which builder package provides each).
SHARED_LIBS_RECIPE = "shared-libs-v1"
# The no-change fast path's records (pydeploy.fastpath): what a build read and gave.
UNCHANGED_RECIPE = "unchanged-v1"
# The secret scan's per-file results: bump when the detectors or the limits change.
SECRET_SCAN_RECIPE = "secretscan-v1"  # noqa: S105 -- a recipe name, not a secret
# The facts read from a base image's layers without an engine (pydeploy.base.facts).
BASE_FACTS_RECIPE = "base-facts-v1"
# The registry cache's records (pydeploy.cache.records): their format, and the tag that
# names one (`<prefix><kind>-<key>`, in the cache repository).
REGISTRY_CACHE_FORMAT = "1"
REGISTRY_CACHE_TAG_PREFIX = "pydeploy-cache-"
# What the SBOM reads from dependency and system layers (pydeploy.attest.contents).
SBOM_CONTENTS_RECIPE = "sbom-contents-v1"

# --- engine volumes and images ------------------------------------------------------------

VOLUME_PREFIX = "pydeploy-"  # every volume below starts with it (`prune` lists by it)
CACHE_VOLUME = "pydeploy-cache"  # uv's download and wheel cache, shared by all builds
VENV_VOLUME_PREFIX = "pydeploy-venv-"  # + the dependency key: one venv each
# + a build id: one builder image build's apt lists and .debs
APT_VOLUME_PREFIX = "pydeploy-apt-"
# + a key of the base image: an empty volume whose labels hold the probe
PYTHON_VOLUME_PREFIX = "pydeploy-python-"
BUILDER_REPOSITORY = "pydeploy-builder"  # full builder images, tagged by their content key
# A base read without the engine (registry, OCI layout, archive), loaded into it for a
# builder container of its platform: tagged ARCH-IMAGEID16.
BASE_REPOSITORY = "pydeploy-base"
PRELOAD_REPOSITORY = "pydeploy-preload"  # a build's preloaded final image, tagged by build ID

# Records pydeploy keeps inside a venv volume (at its root).
MARKER = ".pydeploy-complete"  # written last by the install: the venv is whole
USED = ".pydeploy-used"  # {"time": epoch seconds}: the last build that used the volume

# --- labels -------------------------------------------------------------------------------

# On every container an Engine creates, and on a build's apt volume: the build's id.
BUILD_LABEL = "pydeploy.build"
# On builder containers (and so on the builder images committed from them: `docker
# commit` keeps the container's labels) and on app-check images: the process that owns
# them (owners.Owner.label).
OWNER_LABEL = "pydeploy.owner"
# On app-check images only (the runtime image a build loads untagged to import the app
# in): the next build removes those whose owner is dead. Builder images never carry it.
CHECK_IMAGE_LABEL = "pydeploy.check-image"
# On `pydeploy run` containers: the project's repository name.
RUN_LABEL = "pydeploy.run"

# On full builder images.
LABEL_KEY = "pydeploy.builder.key"
LABEL_PACKAGES = "pydeploy.builder.packages"
LABEL_BUILDER_BASE = "pydeploy.builder.base"  # the base image ID
LABEL_PYTHON = "pydeploy.python"  # the probed interpreter (JSON); also on probe volumes
LABEL_PYTHON_BASE = "pydeploy.python.base"  # on probe volumes: the base image ID
# On venv volumes.
LABEL_VENV = "pydeploy.venv"  # "1"
LABEL_VENV_KEY = "pydeploy.venv.key"
LABEL_OWNER = "pydeploy.venv.build"  # the build that creates (fills) a venv volume
LABEL_OWNER_PROCESS = "pydeploy.venv.owner"  # its process (owners.Owner.label)
LABEL_CLAIMED = "pydeploy.venv.claimed"  # when (epoch seconds)
# On the cache volume.
LABEL_CACHE = "pydeploy.cache"  # "1"

# --- host cache directories and index kinds ---------------------------------------------

HOST_VENVS_DIR = "venvs"  # builds without an engine: one complete venv per dependency key
UNCHANGED_DIR = "unchanged"  # the no-change records, one file per command key; `prune` ages them

# --- host cache index kinds (BlobStore.read_index / write_index) ------------------------

INDEX_DOCKER_SAVE = "docker-save"  # an imported base image, by image ID
INDEX_BASE_ACCOUNTS = "base-accounts"  # the base's /etc/passwd and /etc/group, by image ID
INDEX_BASE_CONFIG = "base-config"  # a base's config alone (no blobs), by image ID
INDEX_BASE_ARCHIVE = "base-archive"  # a docker-archive base's image ID, by path and stat
INDEX_BASE_FACTS = "base-facts"  # accounts, interpreter, libc read from its layers, by image ID
INDEX_APP_CHECK = "app-check"  # interface and worker memory, by the check's inputs
INDEX_APP_CHECK_LAST = "app-check-last"  # the last check's answer, by project and app
INDEX_IMAGE_LAYERS = "image-layers"  # a local image's layer diff IDs, by image ID
INDEX_PRELOAD = "preload"  # a build that preloaded its final image, by build ID
INDEX_PROJECT_LAYER = "project-layer"  # the app layer with the project's wheel
INDEX_BUILD_LAYER = "build-layer"  # what build commands wrote, by everything they saw
INDEX_VENV_LAST = "venv-last"  # the last venv volume, by project and builder key
INDEX_VENV_LAYERS = "venv-layers"  # the dependency layers, by dependency key
INDEX_DEPENDENCY_LAYER = "dependency-layer"  # one dependency layer, by its content
INDEX_GZIP = "gzip"  # a layer's gzip, by its diff ID (made when an output needs it)
INDEX_SETUID = "no-setuid"
INDEX_SYSTEM_LAYER = "system-layer"
INDEX_SHARED_LIBS = "shared-libs"  # by dependency key, base image and runtime packages
INDEX_SECRET_SCAN = "secret-scan"  # noqa: S105 -- an index kind, not a secret
# A registry cache record this host pushed or found there, by repository and tag: the
# next build writes it again only when it is gone from here.
INDEX_REGISTRY_RECORD = "registry-record"
# A dependency set this host cannot install for a platform (a dependency without a wheel),
# by its host key: the next build goes to a builder container without trying again.
INDEX_HOST_NEEDS_BUILDER = "host-needs-builder"
INDEX_SBOM_CONTENTS = "sbom-contents"  # distributions / dpkg status, by the layers' diff IDs
