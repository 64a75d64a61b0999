"""`swarm data` (also `swarm-data`): write synthetic data sets, show what a data file holds.

    swarm data synth --format {cifar10,cifar100,mnist} --out DIR [--train N] [--test N] [--seed S]
    swarm data show PATH_OR_URL [--format F] [--sha256 HEX] [--label-mode fine|coarse]

`synth` prints the file's path, then `sha256: HEX`. Errors are one line,
`swarm data: error: ...`, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from swarm.cli.args import whole_number

from . import Dataset, DataError, load_dataset, sha256_of
from .cifar import CIFAR10, CIFAR100
from .mnist import MNIST
from .synth import WRITERS

PROG = "swarm data"
_FILE_FORMATS = {spec.name: spec for spec in (CIFAR10, CIFAR100, MNIST)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Data sets for swarm jobs.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    synth = verbs.add_parser("synth", help="write a small learnable data set in a standard format",
                             description="Write a small synthetic data set in exactly the format "
                                         "of the real file; prints its path and SHA-256.")
    synth.add_argument("--format", required=True, choices=sorted(WRITERS))
    synth.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="directory to write the standard file into")
    synth.add_argument("--train", type=whole_number(1), default=500, metavar="N",
                       help="training images (default 500)")
    synth.add_argument("--test", type=whole_number(1), default=100, metavar="N",
                       help="test images (default 100)")
    synth.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    show = verbs.add_parser("show", help="print the shapes and class counts of a data set",
                            description="Load a data set as a job would and print what it holds.")
    show.add_argument("source", metavar="PATH_OR_URL",
                      help="a standard file, a directory holding one, or a URL")
    show.add_argument("--format", choices=sorted(_FILE_FORMATS),
                      help="the data set (default: told from the file name)")
    show.add_argument("--sha256", metavar="HEX", help="check the file's SHA-256 first")
    show.add_argument("--label-mode", choices=("fine", "coarse"), default="fine",
                      help="CIFAR-100 labels (default fine)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "synth":
            return _synth(args)
        return _show(args)
    except (DataError, OSError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


def _synth(args: argparse.Namespace) -> int:
    path = WRITERS[args.format](args.out, train=args.train, test=args.test, seed=args.seed)
    print(path)
    print(f"sha256: {sha256_of(path)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    name = args.format or _format_of(args.source)
    options: dict[str, object] = {"sha256": args.sha256}
    if name == "cifar100":
        options["label_mode"] = args.label_mode
    dataset = load_dataset(name, args.source, **options)
    print(_describe(dataset, args.source))
    return 0


def _format_of(source: str) -> str:
    """The data set a source holds, told from its standard file name (or one in a directory)."""
    url = urlparse(source)
    local = Path(url.path if url.scheme == "file" else source)
    if url.scheme in ("", "file") and local.is_dir():
        for name, spec in _FILE_FORMATS.items():
            if (local / spec.filename).exists() or (spec.folder and (local / spec.folder).exists()):
                return name
    basename = Path(url.path if len(url.scheme) > 1 else source).name
    # cifar-100 first: "cifar-10" is a prefix of it
    for name in ("cifar100", "cifar10", "mnist"):
        spec = _FILE_FORMATS[name]
        if basename == spec.filename or (spec.folder and basename == spec.folder):
            return name
    if basename.endswith(".npz"):
        return "mnist"
    raise DataError(f"cannot tell which data set {source} holds; pass --format "
                    f"({', '.join(sorted(_FILE_FORMATS))})")


def _describe(dataset: Dataset, source: str) -> str:
    """Shapes, dtypes and per-class train/test counts, one line each."""
    lines = [f"{dataset.name} from {source}: {dataset.num_classes} classes"]
    for part, x, y in (("train", dataset.train_x, dataset.train_y),
                       ("test", dataset.test_x, dataset.test_y)):
        lines.append(f"{part:<5}  x {x.dtype} {x.shape}  y {y.dtype} {y.shape}")
    train_counts = np.bincount(dataset.train_y, minlength=dataset.num_classes)
    test_counts = np.bincount(dataset.test_y, minlength=dataset.num_classes)
    width = max(len(c) for c in dataset.classes)
    lines.append(f"{'class':<{width}}  train  test")
    for label, train, test in zip(dataset.classes, train_counts, test_counts):
        lines.append(f"{label:<{width}}  {train:>5}  {test:>4}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
