#!/usr/bin/env bash
# Build (once) the local base image the tests use: no registry can be pulled here, so
# the base is bootstrapped from Debian's packages and imported into the engine.
# The image name carries a hash of this recipe, so a changed recipe gives a new image.
set -euo pipefail
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
RECIPE="debootstrap minbase $SUITE $PACKAGES v1"
KEY=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
NAME="pydeploy-test-base:$SUITE-$KEY"
if docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "$NAME"
    exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$WORK/root" >"$WORK/log" 2>&1 || {
    tail -20 "$WORK/log" >&2; exit 1; }
# Drop what debootstrap leaves that an image never needs (apt lists, logs, caches).
rm -rf "$WORK/root/var/lib/apt/lists/"* "$WORK/root/var/cache/apt/"*.bin "$WORK/root/var/log/"* \
       "$WORK/root/var/cache/apt/archives/"*.deb
tar --numeric-owner -C "$WORK/root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/usr/bin/python3"]' - "$NAME" >/dev/null
echo "$NAME"
