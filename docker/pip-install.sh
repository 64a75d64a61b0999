#!/bin/sh
# pip inside an image build: from the wheelhouse /wheels when build-images.sh filled it
# (no index at all: the build needs no network), else from the default index plus
# $PIP_EXTRA_INDEX_URL when that build argument is set (empty by default).
#   pip-install.sh ROLE EXTRAS [NO_DEPS]   the pinned requirements of an image
#                (requirements.py), then the extras NO_DEPS' pins with --no-deps (tf-keras
#                requires the 572 MB `tensorflow`; EXTRAS' tensorflow-cpu serves it)
#   pip-install.sh project       the swarm package itself, without dependencies
set -eu
[ -n "${PIP_EXTRA_INDEX_URL:-}" ] || unset PIP_EXTRA_INDEX_URL
from=""
if ls /wheels/*.whl >/dev/null 2>&1; then from="--no-index --find-links /wheels"; fi
if [ "$1" = project ]; then
  # pyproject's readme: a stand-in, so that editing the README rebuilds no image.
  [ -f /src/README.md ] || echo "swarm: see the project's README" > /src/README.md
  exec pip install --quiet $from --no-deps /src
fi
python /src/requirements.py "$1" "${2:-}" > /tmp/requirements.txt
echo "pip-install ($1): $(tr '\n' ' ' < /tmp/requirements.txt)"
pip install --quiet $from -r /tmp/requirements.txt
if [ -n "${3:-}" ]; then
  python /src/requirements.py only "$3" > /tmp/no-deps.txt
  echo "pip-install (--no-deps): $(tr '\n' ' ' < /tmp/no-deps.txt)"
  pip install --quiet $from --no-deps -r /tmp/no-deps.txt
fi
