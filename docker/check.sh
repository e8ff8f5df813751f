#!/usr/bin/env bash
# `make docker-check`: build docker/Dockerfile without Docker Hub, then run the image.
#
#   1. a Debian bookworm rootfs from debootstrap (cached in build/docker-check/rootfs), imported as the
#      local image localhost/imagequant-base:bookworm;
#   2. buildah bud --isolation chroot --layers with BASE_IMAGE set to it -> localhost/imagequant:check;
#   3. inside that image, as its user: tests/unit and one extract_features + predict over a few generated
#      images (docker/check-in-image.sh);
#   4. prints the build time and the image size.
#
# buildah, not docker or podman: `buildah run --isolation chroot` needs no daemon, no registry and no user
# namespaces. Its images live in a storage of this checkout's own (build/docker-check/storage), so a
# second run reuses the base image and the layer cache, other users' images are never touched, and
# `make clean` frees the space. Needs root (debootstrap, overlay mounts); apt installs debootstrap and
# buildah when missing.
#
# Environment:
#   DOCKER_CHECK_FRESH=1       start from nothing: remove the cached rootfs and the storage first
#   DOCKER_CHECK_IMAGES=N      sample images for the extract + predict run (default 6)
#   DOCKER_CHECK_PIP_INDEXES   local PEP 503 index folders ("DIR/simple", wheels linked from beside it) to
#                              mount read-only and hand to pip; default: those of /opt/pypi-more/simple
#                              and /opt/pypi/simple that exist. Empty: PyPI alone.
#   DOCKER_CHECK_CA_BUNDLE     CA bundle for pip in the build (default /etc/ssl/certs/ca-certificates.crt;
#                              empty: pip's own)
#   DEBIAN_MIRROR              default http://deb.debian.org/debian
set -euo pipefail

cd "$(dirname "$0")/.."
WORK="$PWD/build/docker-check"
ROOTFS="$WORK/rootfs"
STORAGE="$WORK/storage"
# Runtime state (locks, mount counts) belongs on /run, which a reboot clears; one folder per checkout.
RUNROOT="/run/imagequant-docker-check/$(printf '%s' "$PWD" | sha1sum | cut -c1-12)"
BASE_IMAGE=localhost/imagequant-base:bookworm
IMAGE=localhost/imagequant:check
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
N_IMAGES="${DOCKER_CHECK_IMAGES:-6}"
START=$SECONDS

log() { echo "[docker-check] $*"; }
die() { echo "[docker-check] error: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, overlay mounts): sudo make docker-check"
[[ "$N_IMAGES" =~ ^[1-9][0-9]*$ ]] || die "DOCKER_CHECK_IMAGES must be a positive number, got '$N_IMAGES'"

# ------------------------------------------------------------------------------------------------ tools
missing=()
command -v debootstrap > /dev/null 2>&1 || missing+=(debootstrap)
command -v buildah > /dev/null 2>&1 || missing+=(buildah)
if (( ${#missing[@]} )); then
  log "installing with apt: ${missing[*]}"
  apt-get update -q > /dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

bah() { buildah --root "$STORAGE" --runroot "$RUNROOT" --storage-driver overlay "$@"; }
image_exists() { bah inspect --type image "$1" > /dev/null 2>&1; }

# Working containers of this run, removed however the script ends.
CONTAINERS=()
cleanup() {
  local c
  for c in "${CONTAINERS[@]+"${CONTAINERS[@]}"}"; do bah rm "$c" > /dev/null 2>&1 || true; done
}
trap cleanup EXIT

if [[ "${DOCKER_CHECK_FRESH:-0}" == 1 && -e "$WORK" ]]; then
  log "DOCKER_CHECK_FRESH=1: removing $ROOTFS and $STORAGE"
  if [[ -d "$STORAGE" ]]; then
    bah rm --all > /dev/null 2>&1 || true  # this checkout's storage only
    bah rmi --all --force > /dev/null 2>&1 || true
  fi
  rm -rf "$ROOTFS" "$ROOTFS.tmp" "$STORAGE" "$RUNROOT"
fi
mkdir -p "$WORK" "$RUNROOT"
log "$(buildah --version); debootstrap $(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || echo '?'); storage $STORAGE"

# ------------------------------------------------------------------------------------------ base image
if image_exists "$BASE_IMAGE"; then
  log "base image $BASE_IMAGE: present, reused"
else
  if [[ -f "$ROOTFS/.complete" ]]; then
    log "bookworm rootfs: $ROOTFS (cached)"
  else
    log "debootstrap bookworm (minbase) from $MIRROR into $ROOTFS (log: $WORK/debootstrap.log)"
    rm -rf "$ROOTFS.tmp"
    t0=$SECONDS
    # Into a temporary folder, renamed when whole: an interrupted run never leaves a half rootfs to reuse.
    debootstrap --variant=minbase bookworm "$ROOTFS.tmp" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
      || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (full log: $WORK/debootstrap.log)"; }
    # Updates and security too, like the official Debian images.
    rm -f "$ROOTFS.tmp/etc/apt/sources.list"
    cat > "$ROOTFS.tmp/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    touch "$ROOTFS.tmp/.complete"
    mv "$ROOTFS.tmp" "$ROOTFS"
    log "debootstrap: $((SECONDS - t0)) s"
  fi
  log "importing $ROOTFS as $BASE_IMAGE"
  t0=$SECONDS
  ctr="$(bah from scratch)"
  CONTAINERS+=("$ctr")
  mnt="$(bah mount "$ctr")"
  # Without the device nodes (the runtime provides /dev), the downloaded .debs, the apt lists (every
  # Dockerfile runs apt-get update) and this host's resolv.conf and hostname.
  tar -C "$ROOTFS" --exclude=./.complete --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' \
    --exclude=./etc/resolv.conf --exclude=./etc/hostname -cf - . | tar -C "$mnt" -xpf -
  bah umount "$ctr" > /dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash \
    --label org.opencontainers.image.description="Debian bookworm (debootstrap minbase) for make docker-check" "$ctr"
  bah commit -q "$ctr" "$BASE_IMAGE" > /dev/null
  bah rm "$ctr" > /dev/null
  CONTAINERS=()
  log "imported in $((SECONDS - t0)) s"
fi

# ----------------------------------------------------------------------------------------- project image
# Docker's image format: the OCI format has no SHELL, and the Dockerfile's RUN steps are bash. The ignore
# file is the one BuildKit reads for docker/Dockerfile.
build_args=(--format docker --ignorefile docker/Dockerfile.dockerignore --build-arg "BASE_IMAGE=$BASE_IMAGE")
volumes=()
indexes="${DOCKER_CHECK_PIP_INDEXES-/opt/pypi-more/simple /opt/pypi/simple}"
urls=()
n=0
for index in $indexes; do
  if [[ ! -d "$index" ]]; then
    [[ -z "${DOCKER_CHECK_PIP_INDEXES+set}" ]] || die "DOCKER_CHECK_PIP_INDEXES: no folder $index"
    continue
  fi
  # The index pages link the wheels relatively (../../files/...): mount the folder above the index.
  n=$((n + 1))
  volumes+=(--volume "$(cd "$index/.." && pwd):/run/docker-check/pip-$n:ro")
  urls+=("file:///run/docker-check/pip-$n/$(basename "$index")")
done
if (( ${#urls[@]} )); then
  # Extra indexes, not find-links: for the same wheel on PyPI and on disk, pip takes the last index's copy.
  build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=${urls[*]}")
  log "pip also reads the local indexes $indexes (mounted read-only)"
fi
# pip in the build trusts what this machine trusts (a registry proxy's CA, say), not only its own bundle.
ca="${DOCKER_CHECK_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
if [[ -n "$ca" ]]; then
  [[ -f "$ca" ]] || die "DOCKER_CHECK_CA_BUNDLE: no file $ca"
  volumes+=(--volume "$ca:/run/docker-check/ca-certificates.crt:ro")
  build_args+=(--build-arg PIP_CERT=/run/docker-check/ca-certificates.crt)
fi

log "buildah bud --isolation chroot --layers -f docker/Dockerfile -t $IMAGE (log: $WORK/build.log)"
t0=$SECONDS
# The whole output to the log; each step's first line here, with the seconds since the build started.
set +e
bah bud --isolation chroot --layers --force-rm --pull=never "${build_args[@]}" "${volumes[@]+"${volumes[@]}"}" \
  -f docker/Dockerfile -t "$IMAGE" . 2>&1 | tee "$WORK/build.log" | while IFS= read -r line; do
    if [[ "$line" =~ ^STEP\ [0-9]+/[0-9]+: ]]; then log "$(printf '%5d s' $((SECONDS - t0)))  ${line:0:120}"; fi
  done
status=${PIPESTATUS[0]}
set -e
if (( status != 0 )); then
  tail -n 40 "$WORK/build.log" >&2
  die "the image build failed (full log: $WORK/build.log)"
fi
BUILD_S=$((SECONDS - t0))
cached=$(grep -c -- '^--> Using cache' "$WORK/build.log" || true)
log "image built in ${BUILD_S} s (${cached} steps from the layer cache)"

# ---------------------------------------------------------------------------------------- run the image
user="$(bah inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE")"
workdir="$(bah inspect --type image --format '{{.Docker.Config.WorkingDir}}' "$IMAGE")"
[[ -n "$user" && "$user" != 0 && "$user" != root ]] || die "the image runs as root (User='$user'); it should not"
# A hostname that resolves, as under docker run: Spark's driver looks its own up and stops when it cannot.
host=imagequant-check
ctr="$(bah from --pull=never --add-host "$host:127.0.0.1" "$IMAGE")"
CONTAINERS+=("$ctr")
log "running the checks in $IMAGE as user $user"
t0=$SECONDS
# Through the entrypoint (tini, then entrypoint.sh) as `docker run IMAGE ARGS` calls it. tini -s: buildah
# run does not make it PID 1, so it registers as a subreaper instead.
entry=(/usr/bin/tini -s -- "$workdir/docker/entrypoint.sh")
bah run --isolation chroot --hostname "$host" --user "$user" "$ctr" -- "${entry[@]}" --help > /dev/null \
  || die "the entrypoint's --help failed in the image"
# tests/ and pyproject.toml (pytest's settings) are not in the image: mounted read-only for the check.
bah run --isolation chroot --hostname "$host" --user "$user" \
  --volume "$PWD/tests:$workdir/tests:ro" --volume "$PWD/pyproject.toml:$workdir/pyproject.toml:ro" \
  "$ctr" -- "${entry[@]}" bash docker/check-in-image.sh "$N_IMAGES" \
  || die "the checks inside the image failed (output above)"
RUN_S=$((SECONDS - t0))

size="$(bah images --format '{{.Size}}' "$IMAGE" | head -n 1)"
base_size="$(bah images --format '{{.Size}}' "$BASE_IMAGE" | head -n 1)"
log "passed: $IMAGE is $size (base $base_size); build ${BUILD_S} s, checks in the image ${RUN_S} s, total $((SECONDS - START)) s"
log "to use it: buildah --root $STORAGE --runroot $RUNROOT from $IMAGE"
