"""Imports flow one way: the programs (sn_node, sl_node, ml_sidecar) use the library
(swarm), never the reverse, so that the library installs and runs without them."""

from __future__ import annotations

import ast

from swarm_testing import REPO

PROGRAMS = ("sn_node", "sl_node", "ml_sidecar")


def test_the_library_imports_no_program_module():
    offenders = []
    for path in sorted((REPO / "swarm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} imports {name}"
                          for name in names if name.split(".")[0] in PROGRAMS]
    assert not offenders, "\n".join(offenders)
