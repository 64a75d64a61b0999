"""Regenerates the checked-in gRPC/protobuf modules from the .proto files.

`python -m swarm.protos.build` rewrites them; `--check` exits 1 when the committed
modules differ from a fresh build (the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent.parent


def generate(out_dir: Path) -> list[Path]:
    """Compiles every .proto here into out_dir; imports come out as `swarm.protos.X`."""
    from grpc_tools import protoc  # dev dependency: only needed to rebuild

    outputs = []
    for proto in sorted(PROTO_DIR.glob("*.proto")):
        rel = proto.relative_to(REPO_ROOT)
        code = protoc.main(
            ["protoc", f"-I{REPO_ROOT}", f"--python_out={out_dir}",
             f"--grpc_python_out={out_dir}", str(rel)]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {rel} (exit {code})")
        stem = rel.with_suffix("")
        outputs += [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2_grpc.py")]
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed modules instead of writing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        stale = []
        for rel in generate(Path(tmp)):
            fresh = (Path(tmp) / rel).read_bytes()
            target = REPO_ROOT / rel
            if args.check:
                if not target.exists() or target.read_bytes() != fresh:
                    stale.append(str(rel))
            else:
                target.write_bytes(fresh)
                print(f"wrote {rel}")
    if stale:
        print("out of date with their .proto (run `make protos`): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
