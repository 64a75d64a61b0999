"""`swarm`: one umbrella command over the installed programs.

`swarm sn ...` is `run-sn ...`, `swarm cert ...` is `gen-cert ...`, and so on. The
programs are found through their console-script entry points, so this library
module never imports the programs (imports flow programs -> library only).
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

# umbrella verb -> console script
VERBS = {
    "cert": "gen-cert",
    "sn": "run-sn",
    "sl": "run-sl",
    "stop": "stop-swarm",
    "data": "swarm-data",
    "report": "swarm-report",
    "sweep": "swarm-sweep",
    "status": "swarm-status",
    "ledger": "swarm-ledger",
}


def _script(name: str):
    found = entry_points(group="console_scripts", name=name)
    return next(iter(found), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    available = {verb: script for verb, script in VERBS.items() if _script(script)}
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: swarm VERB [ARGS...]\n\nverbs:")
        for verb, script in available.items():
            print(f"  {verb:<6} same as `{script}`")
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in available:
        print(f"swarm: unknown verb {verb!r}; choose from {', '.join(available)}",
              file=sys.stderr)
        return 2
    sys.argv = [VERBS[verb], *rest]
    result = _script(VERBS[verb]).load()(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
