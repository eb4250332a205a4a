#!/usr/bin/env bash
# Builds the two images of deploy/images/ without a container registry or a package index
# inside the build:
#   localhost/reconciler-base:bookworm      Debian bookworm (minbase) from Debian packages
#   localhost/reconciler:VERSION            the daemon (daemon.Containerfile)
#   localhost/reconciler-gauntlet:VERSION   the gauntlet worker, torch CPU (gauntlet.Containerfile)
#
#   scripts/build-images.sh          the two images, torch CPU
#   scripts/build-images.sh --gpu    the gauntlet image with the CUDA torch wheel instead
#                                    (downloads several GB from $TORCH_CUDA_INDEX)
#
# The base comes from mmdebstrap (Debian's mirror, $DEBIAN_MIRROR) and `podman import`;
# the wheels are downloaded here, on the host, with the host's pip settings (a build sees
# neither them nor the host's wheels) and installed with `pip install --no-index` in the
# build. Outputs lie under build/images/ ($BUILD_DIR); the base tarball is kept there and
# reused until the package list or the mirror changes: delete it for Debian's latest
# security updates. Needs root (mmdebstrap, podman), podman, mmdebstrap and the
# repository's .venv (scripts/bootstrap.sh). A first build takes minutes; later ones reuse
# podman's layer cache.
#
# Environment: PODMAN (default "podman --storage-driver=vfs"), PYTHON (default .venv's),
# DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, TORCH_CUDA_INDEX, CONTAINERS_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cpu
for argument in "$@"; do
  case "$argument" in
    --gpu) variant=cuda ;;
    *) echo "usage: $0 [--gpu]" >&2; exit 2 ;;
  esac
done

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' reconciler/__init__.py)
torch_version=2.13.0
build=${BUILD_DIR:-build/images}
python=${PYTHON:-.venv/bin/python}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cuda_index=${TORCH_CUDA_INDEX:-https://download.pytorch.org/whl/cu128}
read -r -a podman <<< "${PODMAN:-podman --storage-driver=vfs}"
base_image=localhost/reconciler-base:bookworm
daemon_image=localhost/reconciler:$version
gauntlet_image=localhost/reconciler-gauntlet:$version

for tool in mmdebstrap "${podman[0]}"; do
  command -v "$tool" >/dev/null || { echo "$0: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
# The wheels are the host's: its Python must be the image's (bookworm's 3.11, glibc 2.36).
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' ||
  { echo "$0: $python is not Python 3.11, the image's" >&2; exit 1; }

mkdir -p "$build"

# 1. The base: what the daemon needs from Debian and nothing else. Documentation, manuals
# and translations are left out (copyright files stay), as are apt's lists and caches.
packages=python3,bubblewrap,util-linux,ca-certificates,git,openssh-client,gpg,gpgv,tzdata
stamp="$build/base-$(echo "$packages $mirror" | sha256sum | cut -c1-12).tar"
if [ ! -f "$stamp" ]; then
  rm -f "$build"/base-*.tar
  mmdebstrap --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
    bookworm "$build/partial.tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main"
  mv "$build/partial.tar" "$stamp"
  "${podman[@]}" rmi --force "$base_image" >/dev/null 2>&1 || true
fi
"${podman[@]}" image exists "$base_image" || "${podman[@]}" import "$stamp" "$base_image"
# A host that is itself a container needs runc, cgroupfs and lower rlimits (the file says why).
if [ -z "${CONTAINERS_CONF:-}" ] &&
   ! "${podman[@]}" run --rm --network=none "$base_image" true >/dev/null 2>&1; then
  export CONTAINERS_CONF=$PWD/deploy/images/containers-nested.conf
  "${podman[@]}" run --rm --network=none "$base_image" true
fi

# 2. The build context: the Containerfiles, the example desired state, and wheels.
context="$build/context"
rm -rf "$context"
mkdir -p "$context/wheels/tools" "$context/wheels/common" "$context/wheels/torch-$variant"
cp deploy/images/*.Containerfile reconciler.yaml "$context/"
cp -r desired-state "$context/desired-state"
pip=("$python" -m pip --disable-pip-version-check)
"${pip[@]}" download --quiet --no-deps --only-binary=:all: --dest "$context/wheels/tools" pip
mv "$context"/wheels/tools/pip-*.whl "$context/wheels/tools/pip.whl"
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$context/wheels/common" .
"${pip[@]}" download --quiet --only-binary=:all: --dest "$context/wheels/common" \
  "$context"/wheels/common/reconciler_gitops-"$version"-*.whl
if [ "$variant" = cpu ]; then
  # Pinned exactly, with the local CPU build first: a range would fetch the CUDA build.
  "${pip[@]}" download --quiet --only-binary=:all: --dest "$context/wheels/torch-cpu" \
    "torch==$torch_version+cpu"
else
  "${pip[@]}" download --quiet --only-binary=:all: --dest "$context/wheels/torch-cuda" \
    --index-url "$cuda_index" "torch==$torch_version+${cuda_index##*/}"
fi

# 3. The images. The wheels' digests go in as build arguments: a changed wheel must miss
# podman's layer cache, which does not look into bind mounts.
digest() { find "$@" -name '*.whl' -type f -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16; }
"${podman[@]}" build --file "$context/daemon.Containerfile" --build-arg VERSION="$version" \
  --build-arg BASE_IMAGE="$base_image" \
  --build-arg WHEELS_DIGEST="$(digest "$context/wheels/tools" "$context/wheels/common")" \
  --tag "$daemon_image" "$context"
"${podman[@]}" build --file "$context/gauntlet.Containerfile" \
  --build-arg DAEMON_IMAGE="$daemon_image" --build-arg TORCH_VARIANT="$variant" \
  --build-arg TORCH_VERSION="$torch_version" \
  --build-arg WHEELS_DIGEST="$(digest "$context/wheels/torch-$variant")" \
  --tag "$gauntlet_image" "$context"
for image in "$base_image" "$daemon_image" "$gauntlet_image"; do
  "${podman[@]}" image inspect --format "$image {{.Size}}" "$image" |
    awk '{printf "%s %d MB\n", $1, $2 / 1e6}'
done
