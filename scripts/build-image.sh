#!/usr/bin/env bash
# Builds the nightwatch container image and prints its reference as the last line.
#
#   scripts/build-image.sh                 # FROM python:3.11-slim, which the engine must be able to pull
#   scripts/build-image.sh --base local    # FROM a Debian base made here; works offline
#   scripts/build-image.sh --tag registry.example.com/nightwatch:0.1.0
#
# The engine is Docker when an engine answers (`docker info`), else podman (NIGHTWATCH_ENGINE
# forces one). The script first makes, once, what the build needs and keeps it under
# $NIGHTWATCH_IMAGE_CACHE (default ~/.cache/nightwatch-image):
#   - with `--base local`, a base image: mmdebstrap of this host's Debian release with python3, python3-venv and
#     ca-certificates, imported as localhost/nightwatch-base:<release>-<hash of the recipe>;
#   - always, a wheelhouse: `pip wheel` of requirements.lock with this host's /usr/bin/python3
#     (NIGHTWATCH_WHEEL_PYTHON; the same Python version as the base's, so markers and binary
#     wheels come out right), one directory per lock-file hash.
# The wheelhouse is linked into ./wheelhouse/ (git-ignored), which the Dockerfile installs from
# without an index, so no RUN step needs the network.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-image: $*" >&2; exit 1; }
log() { echo "build-image: [${SECONDS}s] $*" >&2; }

base=python:3.11-slim
tag=
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=${2:?--base needs a value}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' nightwatch/__init__.py)  # written once, there
tag=${tag:-localhost/nightwatch:$version}
cache=${NIGHTWATCH_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nightwatch-image}

engine=${NIGHTWATCH_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null; then
    engine=podman
  else
    die "neither a Docker engine nor podman is available (apt-get install podman runc)"
  fi
fi
# podman as it runs on a sandboxed host: runc, the host network for RUN steps, limits the
# sandbox allows, and the Docker image format (the OCI format drops HEALTHCHECK).
engine_cmd=("$engine")
build_flags=()
if [ "$engine" = podman ]; then
  if command -v runc >/dev/null; then engine_cmd+=(--runtime runc); fi
  build_flags=(--format docker --network=host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
fi

if [ "$base" = local ]; then
  command -v mmdebstrap >/dev/null || die "--base local needs mmdebstrap (apt-get install mmdebstrap)"
  . /etc/os-release
  suite=${VERSION_CODENAME:?this host is not Debian}
  packages=python3,python3-venv,ca-certificates
  # Docs, man pages and translations are left out of the base: the image never reads them.
  mm_args=(--variant=minbase --include="$packages"
           --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
           --dpkgopt='path-include=/usr/share/doc/*/copyright'
           --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')
  recipe=$(printf '%s\n' "$suite" "${mm_args[@]}" | sha256sum | cut -c1-12)
  base=localhost/nightwatch-base:$suite-$recipe
  if ! "${engine_cmd[@]}" image inspect "$base" >/dev/null 2>&1; then
    tarball=$cache/base-$suite-$recipe.tar
    if [ ! -f "$tarball" ]; then
      log "making the base image with mmdebstrap ($suite, $packages)"
      mkdir -p "$cache"
      mmdebstrap --quiet --format=tar "${mm_args[@]}" "$suite" "$tarball.part" >&2
      mv "$tarball.part" "$tarball"
    fi
    "${engine_cmd[@]}" import --quiet "$tarball" "$base" >/dev/null
    log "base image $base imported"
  fi
fi

wheel_python=${NIGHTWATCH_WHEEL_PYTHON:-/usr/bin/python3}
pyver=$("$wheel_python" -c 'import platform; print(platform.python_version())')
lockhash=$(sha256sum requirements.lock | cut -c1-16)
wheels=$cache/wheels-$lockhash-py$pyver
if [ ! -d "$wheels" ]; then
  log "making the wheelhouse with $wheel_python (Python $pyver)"
  rm -rf "$wheels.part"
  "$wheel_python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --requirement requirements.lock --wheel-dir "$wheels.part" >&2
  mv "$wheels.part" "$wheels"
  log "wheelhouse ready: $(ls "$wheels" | wc -l) wheels"
fi
rm -rf wheelhouse
mkdir wheelhouse
# Hard links when the cache is on the same file system, copies otherwise.
cp --link "$wheels"/*.whl wheelhouse/ 2>/dev/null || cp "$wheels"/*.whl wheelhouse/

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
log "building $tag from $base with $engine"
"${engine_cmd[@]}" build "${build_flags[@]}" \
  --build-arg BASE_IMAGE="$base" --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --tag "$tag" . >&2
log "built $tag"
echo "$tag"
