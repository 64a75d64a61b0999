#!/bin/sh
# Runs this example as a swarm on this host (see README.md): certificates, a sentinel SN,
# two SL nodes each training train.py as its ML sidecar, their logs on this terminal.
# ./run.sh --help lists the options (--local, --synth, --nodes, -e KEY=VALUE, --dry-run).
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../../.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" "$here/../common/launch.py" --train "$here/train.py" --data-format mnist "$@"
