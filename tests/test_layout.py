"""Imports point one way: recdata <- encoders <- tokenizer <- generative_rec, ranking <- eval
<- mmqrec <- pipeline (ranking may use generative_rec for candidates)."""

from __future__ import annotations

import ast

from tests.conftest import REPO_ROOT

LAYER = {"recdata": 0, "encoders": 1, "tokenizer": 2, "generative_rec": 3, "ranking": 3,
         "eval": 4, "mmqrec": 5, "pipeline": 6}
ALSO_ALLOWED = {("ranking", "generative_rec")}


def _imported_packages(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(LAYER)


def test_packages_import_only_downwards():
    wrong = []
    for package, layer in LAYER.items():
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for other in _imported_packages(path):
                if other == package or (package, other) in ALSO_ALLOWED:
                    continue
                if LAYER[other] >= layer:
                    wrong.append(f"{path.relative_to(REPO_ROOT)} imports {other}")
    assert not wrong, wrong
