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


def _module_graph() -> dict[str, set[str]]:
    """Project module -> project modules it imports (at module level or inside functions)."""
    modules = {}
    for package in LAYER:
        for path in (REPO_ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def test_no_import_cycles_between_modules():
    graph = _module_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


RUN_DIRS = ("data", "embeddings", "tokenizer", "retriever", "ranker", "baselines", "report",
            "variants", "logs", "additions")


def test_run_directory_paths_come_from_the_layout_module():
    """Stages ask recdata.layout where an artefact lives instead of joining its folder name."""
    import re

    pattern = re.compile(r'/\s*"(%s)"' % "|".join(RUN_DIRS))
    joins = []
    for package in LAYER:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path.relative_to(REPO_ROOT).as_posix() == "recdata/layout.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line) and '"shared"' not in line:
                    joins.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not joins, joins
