#!/usr/bin/env bash
# Build (once) the arm64 half of the test base: the recipe of .ci/base-image.sh for
# --arch arm64, run under QEMU user emulation (binfmt_misc's qemu-aarch64 entry must be
# registered: the `qemu` step of .ci/test does it). The name carries a hash of this recipe.
#
# The image is written by hand (a docker-archive with its own config) rather than by
# `docker import`: import labels the image with the engine's architecture (amd64) even with
# --platform linux/arm64, and a registry index built from it would then lie.
set -euo pipefail
SUITE=bookworm
ARCH=arm64
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
RECIPE="debootstrap minbase $SUITE $ARCH $PACKAGES v1"
KEY=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
NAME="pydeploy-test-base-$ARCH:$SUITE-$KEY"
if docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "$NAME"
    exit 0
fi
# Minutes of work: a second run meanwhile (another checkout's CI) waits for this one's image
# instead of building its own.
exec 9>"/tmp/pydeploy-test-base-$ARCH-$KEY.lock"
flock 9
if docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "$NAME"
    exit 0
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo "binfmt_misc has no qemu-aarch64 entry: arm64 programs cannot run here." >&2
    echo "Run .ci/test (its qemu step registers it), or as root: apt-get install qemu-user-static," >&2
    echo "then write the line of /usr/lib/binfmt.d/qemu-aarch64.conf to /proc/sys/fs/binfmt_misc/register." >&2
    exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
debootstrap --arch "$ARCH" --variant=minbase --include="$PACKAGES" "$SUITE" "$WORK/root" \
    >"$WORK/log" 2>&1 || { tail -20 "$WORK/log" >&2; exit 1; }
rm -rf "$WORK/root/var/lib/apt/lists/"* "$WORK/root/var/cache/apt/"*.bin "$WORK/root/var/log/"* \
       "$WORK/root/var/cache/apt/archives/"*.deb
mkdir "$WORK/archive"
tar --numeric-owner -C "$WORK/root" -c . >"$WORK/archive/layer.tar"
# The same config as the amd64 image (ENV PATH, CMD), with the platform it really has.
python3 - "$WORK/archive" "$NAME" "$RECIPE" <<'EOF'
import datetime, hashlib, json, sys
from pathlib import Path

archive, name, recipe = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
digest = hashlib.sha256()
with (archive / "layer.tar").open("rb") as layer:
    while chunk := layer.read(1 << 20):
        digest.update(chunk)
created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
config = {
    "architecture": "arm64",
    "variant": "v8",
    "os": "linux",
    "created": created,
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/usr/bin/python3"],
    },
    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]},
    "history": [{"created": created, "created_by": recipe}],
}
raw = json.dumps(config, separators=(",", ":")).encode()
config_name = hashlib.sha256(raw).hexdigest() + ".json"
(archive / config_name).write_bytes(raw)
manifest = [{"Config": config_name, "RepoTags": [name], "Layers": ["layer.tar"]}]
(archive / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
EOF
tar -C "$WORK/archive" -c . | docker load >/dev/null
echo "$NAME"
