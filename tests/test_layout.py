"""The house's rules, checked on the source: no import reaches up (nor goes round in a circle), no function runs
over 60 lines, and every library module has its tests in tests/test_<module>.py. CONTRIBUTING.md, "Layout", draws
the same rooms."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qwen2_lab"

# Each library module's floor, lowest first: a module imports only modules on a lower floor (function-level imports
# included). Checking code and the sandbox use the standard library only and sit apart; the bundled checkpoints'
# recipe sits on top.
FLOORS = {
    "facts": 0, "allocator": 0, "inputs": 0, "sandbox": 0, "checks": 0.5,
    "arch": 1, "tokenizer": 1, "forward": 1, "saved": 1.5,
    "trace": 2, "rope": 2, "sampling": 2,
    "recorder": 3, "dca": 3, "compare": 3,
    "generate": 4,
    "lab": 5,
    "loading": 6, "edits": 6, "experiments": 6,
    "patching": 7, "attribution": 7,
    "viz.style": 8, "viz": 8.5,
    "widgets": 9, "notebook": 9,
    "tiny": 10,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(name: str) -> float:
    """The floor of a module: its own entry, else its package's (viz.moe is on viz's floor, checks.judge on checks')."""
    while name not in FLOORS:
        if "." not in name:
            raise AssertionError(f"qwen2_lab/{name}: give it a floor in tests/test_layout.py FLOORS")
        name = name.rsplit(".", 1)[0]
    return FLOORS[name]


def is_type_checking(node) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path) -> set[str]:
    """The qwen2_lab modules that `path` imports, anywhere in the file."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    hints = {id(n) for block in ast.walk(tree) if is_type_checking(block) for s in block.body for n in ast.walk(s)}
    for node in ast.walk(tree):
        if id(node) in hints:  # `if TYPE_CHECKING:` imports are type hints, never run
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                out.add(sub if (PACKAGE / sub.replace(".", "/")).with_suffix(".py").exists() else target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qwen2_lab."):
            out.add(node.module.removeprefix("qwen2_lab."))
    return {m for m in out if m and m != me}


LIBRARY = [p for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "__init__.py"]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_reaches_up(path):
    me = module_name(path)
    up = sorted(m for m in imports(path) if not m.startswith(me + ".") and floor(m) >= floor(me))
    within = [m for m in up if floor(m) == floor(me) and m.split(".")[0] == me.split(".")[0]]
    # Inside a package (viz, checks, sandbox, tiny) modules may use each other, but never the package's front door.
    assert [m for m in up if m not in within] == [], f"qwen2_lab/{me} imports from its floor or above"
    assert me.split(".")[0] in {"viz", "checks", "sandbox", "tiny"} or not within


def test_no_import_circle():
    graph = {module_name(p): imports(p) for p in LIBRARY}
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(m) :] + [m]))
        if m in done or m not in graph:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in graph:
        visit(m)


@pytest.mark.parametrize("folder", ["qwen2_lab", "demo"])
def test_no_function_over_60_lines(folder):
    long = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert long == [], "split these into smaller functions"


def test_tests_mirror_the_library():
    """tests/test_<module>.py for each module of the library (a subpackage: tests/test_<package>*.py)."""
    have = {p.stem.removeprefix("test_") for p in (ROOT / "tests").glob("test_*.py")}
    missing = []
    for path in LIBRARY:
        top = module_name(path).split(".")[0]
        if not any(h == top or h.startswith(top + "_") for h in have):
            missing.append(top)
    assert sorted(set(missing)) == []
