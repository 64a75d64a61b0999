#!/bin/bash
# Builds the swarm images with podman (or ENGINE=docker), once per machine: an image whose
# label org.swarm.content-hash matches the hash of what it is built from (Dockerfile, these
# scripts, pyproject.toml, the sources, the base image) is left alone.
#   docker/build-images.sh [IMAGE ...]      default: node numpy
#     node        swarm-node:latest   run-sn, run-sl, ... and /app/examples
#     numpy       swarm-ml:numpy      sidecar: callback, gRPC, NumPy (small; the tests use it)
#     torch       swarm-ml:torch      sidecar + the torch extra
#     keras       swarm-ml:keras      sidecar + the keras extra (TensorFlow, Keras 3)
#     keras2      swarm-ml:keras2     keras + tf-keras (--no-deps), TF_USE_LEGACY_KERAS=1:
#                                     tf.keras programs (Keras 2); only built when named
#     node-torch  swarm-node:torch    node + torch (the pytorch example's compose file)
#     node-keras  swarm-node:keras    node + keras (the keras examples' compose files)
# pip never runs against an index inside a build: the host's pip (PYTHON, default python3,
# with this machine's index configuration, e.g. the local file:// indexes that serve the
# CPU torch) first fills a wheelhouse, docker/wheels/IMAGE, that the build installs from.
# PIP_EXTRA_INDEX_URL, when set, is passed to the build instead (no wheelhouse: --no-wheelhouse).
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-podman}
PYTHON=${PYTHON:-python3}
LABEL=org.swarm.content-hash
wheelhouse=1
declare -A TARGET=([node]=node [numpy]=sidecar [torch]=sidecar [keras]=sidecar
                   [keras2]=sidecar-keras2 [node-torch]=node [node-keras]=node)
declare -A EXTRAS=([node]= [numpy]= [torch]=torch [keras]=keras [keras2]=keras
                   [node-torch]=torch [node-keras]=keras)
declare -A NO_DEPS=([keras2]=keras2)  # installed with --no-deps after EXTRAS
declare -A TAG=([node]=swarm-node:latest [numpy]=swarm-ml:numpy [torch]=swarm-ml:torch
                [keras]=swarm-ml:keras [keras2]=swarm-ml:keras2 [node-torch]=swarm-node:torch [node-keras]=swarm-node:keras)
images=()
for arg in "$@"; do
  case $arg in
    --no-wheelhouse) wheelhouse=0 ;;
    -h|--help) sed -n '2,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) [ -n "${TARGET[$arg]:-}" ] || { echo "build-images: unknown image '$arg' (${!TARGET[*]})" >&2; exit 2; }
       images+=("$arg") ;;
  esac
done
[ ${#images[@]} -gt 0 ] || images=(node numpy)
command -v "$ENGINE" >/dev/null || { echo "build-images: $ENGINE is not installed (run docker/setup-podman.sh as root)" >&2; exit 1; }
base=$("$ENGINE" image inspect --format '{{.Id}}' python:3.11-slim 2>/dev/null) \
  || { echo "build-images: no python:3.11-slim image (run docker/setup-podman.sh as root)" >&2; exit 1; }

# One build at a time on this machine (make test and a test fixture may both ask).
exec 9>"${TMPDIR:-/tmp}/swarm-build-images.lock"
flock 9

sources_hash() {  # what an image is built from; examples only for node images
  local dirs=(swarm sn_node sl_node ml_sidecar certs)
  [ "$1" = node ] && dirs+=(examples)
  { printf '%s\n' "$1" "$2" "$base" "${PIP_EXTRA_INDEX_URL:-}" "$wheelhouse"
    find docker/Dockerfile docker/requirements.py docker/pip-install.sh pyproject.toml \
         "${dirs[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
         ! -path 'examples/*/data/*' ! -path 'examples/*/run/*' -print0 \
      | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

for image in "${images[@]}"; do
  target=${TARGET[$image]} extras=${EXTRAS[$image]} tag=${TAG[$image]} nodeps=${NO_DEPS[$image]:-}
  hash=$(sources_hash "$target" "$extras${nodeps:+ no-deps $nodeps}")
  have=$("$ENGINE" image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$tag" 2>/dev/null || true)
  if [ "$have" = "$hash" ]; then
    echo "== $tag up to date ($hash)"
    continue
  fi
  t0=$(date +%s)
  args=(--target "$target" --build-arg "EXTRAS=$extras" --build-arg "NO_DEPS=$nodeps"
        --label "$LABEL=$hash")
  if [ $wheelhouse = 1 ] && [ -z "${PIP_EXTRA_INDEX_URL:-}" ]; then
    wheels=docker/wheels/$image
    mkdir -p "$wheels"
    role=$([ "$target" = node ] && echo node || echo sidecar)
    deps=$("$PYTHON" docker/requirements.py "$role" "$extras"; printf 'setuptools>=68\nwheel\n')
    wanted=$(echo "$deps"; [ -z "$nodeps" ] || "$PYTHON" docker/requirements.py only "$nodeps")
    if [ "$wanted" != "$(cat "$wheels/requirements.txt" 2>/dev/null)" ]; then
      echo "== $tag: wheelhouse $wheels (host pip)"
      "$PYTHON" -m pip wheel --quiet --disable-pip-version-check -w "$wheels" -r <(echo "$deps") 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
      if [ -n "$nodeps" ]; then
        "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$wheels" \
          -r <("$PYTHON" docker/requirements.py only "$nodeps") 2>&1 \
          | { grep -v "is ignored: it is neither a file nor a directory" || true; }
      fi
      echo "$wanted" > "$wheels/requirements.txt"  # what it holds: the same next time, no pip
    fi
    args+=(--build-arg "WHEELS=$wheels")
  else
    args+=(--build-arg "PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL:-}")
  fi
  echo "== $tag: $ENGINE build --target $target EXTRAS=$extras"
  ignore=()
  [ "$ENGINE" = podman ] && ignore=(--ignorefile docker/Dockerfile.dockerignore)
  "$ENGINE" build --quiet "${ignore[@]}" -f docker/Dockerfile "${args[@]}" -t "$tag" . >/dev/null
  echo "== $tag built in $(( $(date +%s) - t0 )) s: $("$ENGINE" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
done
