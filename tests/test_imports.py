"""The package's shape: no import cycle anywhere (module level or inside functions), and the
loop and the distributed code know no objective, head or batch key by name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import selfsup
from selfsup import keys
from selfsup.objectives import OBJECTIVES

ROOT = Path(selfsup.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the selfsup modules it imports, at module level or in any function."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]  # fmt: skip
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "selfsup.objectives.mlm" in graph["selfsup.objectives"]
    assert "selfsup.distributed" in graph["selfsup.train"]  # `from selfsup import distributed`
    # a function-level import counts too
    assert "selfsup.pretraining" in graph["selfsup.inspect"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_loop_and_distributed_name_no_objective_head_or_batch_key():
    banned = {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str)}
    banned |= {name for n in OBJECTIVES for name in re.split(r"\W", n)}  # mlm, nsp, sop
    banned |= {"pair_task", "n_masked", "mlm_head", "pair_head", "pooler", "masked"}
    heads = {p.stem for p in (ROOT / "heads").glob("*.py")} - {"__init__"}
    for path in (ROOT / "train.py", ROOT / "distributed.py"):
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", path.read_text().lower()))
        assert not words & banned, (path.name, words & banned)
        assert not {w for w in words if any(w.startswith(h + "_") for h in heads)}, path.name
        assert "head" not in words and "heads" not in words, path.name
