"""The package rules of ARCHITECTURE.md, read from the imports of every module.

Each rule has a test that fails on a planted violation, so a rule that can no longer fail is caught too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "runtime", "lake", "aggregator", "query", "shipper")
# What each package may import besides itself; missing: anything.
ALLOWED = {
    "schemas": set(),
    "runtime": set(),
    "lake": {"schemas", "runtime"},
    "query": {"lake", "schemas", "runtime"},
    "aggregator": {"lake", "schemas", "runtime"},
    "shipper": {"schemas", "runtime"},
}
# Libraries whose use one module of each package owns: their setup, errors and versions live in one place.
HEAVY = ("duckdb", "aiokafka", "zstandard", "pyarrow.parquet")

Graph = dict[str, set[str]]
# What an import_module()/__import__() call whose name is not a constant string counts as: it could be anything.
COMPUTED = "<computed>"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[str]:
    """Every module ``source`` imports, at any depth of the file (a function-level import is still a
    dependency), with relative imports resolved; importlib.import_module and __import__ calls count too."""
    out: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _dynamic_import(node.func):
            arg = node.args[0] if node.args else None
            out.append(arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else COMPUTED)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append(name)
            # `from pkg import mod` imports the module pkg.mod
            out += [f"{name}.{a.name}" for a in node.names]
    return out


def _dynamic_import(func: ast.expr) -> bool:
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name in ("import_module", "__import__")


def scan(root: Path = ROOT) -> tuple[Graph, dict[str, list[str]]]:
    """The project's import graph (module -> project modules it imports) and every import per module."""
    files = {module_name(p, root): p for pkg in PACKAGES if (root / pkg).is_dir()
             for p in (root / pkg).rglob("*.py") if "target" not in p.parts}
    graph: Graph = defaultdict(set)
    raw: dict[str, list[str]] = {}
    for mod, path in files.items():
        names = imports_of(path.read_text(), mod, path.name == "__init__.py")
        raw[mod] = names
        for name in names:
            if name in files and name != mod:
                graph[mod].add(name)
        graph.setdefault(mod, set())
    return dict(graph), raw


def package(module: str) -> str:
    return module.split(".")[0]


def rule_violations(graph: Graph) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                  if package(d) != package(m) and package(d) not in ALLOWED[package(m)])


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def heavy_owners(raw: dict[str, list[str]]) -> dict[tuple[str, str], set[str]]:
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for mod, names in raw.items():
        for lib in HEAVY:
            if any(n == lib or n.startswith(lib + ".") for n in names):
                owners[(package(mod), lib)].add(mod)
    return owners


def test_packages_import_only_what_they_may():
    graph, _ = scan()
    assert rule_violations(graph) == []


def test_no_module_imports_a_computed_name():
    _, raw = scan()
    assert sorted(m for m, names in raw.items() if COMPUTED in names) == []


def test_no_import_cycles():
    graph, _ = scan()
    assert cycles(graph) == []


def test_each_heavy_library_has_one_module_per_package():
    _, raw = scan()
    shared = {k: sorted(v) for k, v in heavy_owners(raw).items() if len(v) > 1}
    assert shared == {}


def test_the_tree_is_the_documented_one():
    """Every package has its section in ARCHITECTURE.md naming each of its modules and subpackages."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    for pkg in PACKAGES:
        assert f"## `{pkg}/`" in text, pkg
        section = text.split(f"## `{pkg}/`", 1)[1].split("\n## ", 1)[0]
        for sub in sorted((ROOT / pkg).iterdir()):
            if sub.is_dir() and ((sub / "__init__.py").exists() or (sub / "Cargo.toml").exists()):
                assert f"`{sub.name}/`" in section, f"{pkg}/{sub.name}"
            elif sub.suffix == ".py" and sub.name != "__init__.py":
                assert f"`{sub.name}`" in section, f"{pkg}/{sub.name}"


# --- the checks fail on planted violations ---------------------------------------------------------

def _plant(tmp: Path, files: dict[str, str]) -> tuple[Graph, dict[str, list[str]]]:
    for rel, text in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for pkg in PACKAGES:
        (tmp / pkg).mkdir(exist_ok=True)
        (tmp / pkg / "__init__.py").touch()
    return scan(tmp)


@pytest.mark.parametrize("rel,text,expected", [
    ("query/x.py", "from aggregator import y\n", "query.x imports aggregator.y"),
    ("query/x.py", "def f():\n    import shipper.y\n", "query.x imports shipper.y"),
    ("schemas/x.py", "from runtime.y import z\n", "schemas.x imports runtime.y"),
    ("runtime/x.py", "from lake import y\n", "runtime.x imports lake.y"),
    ("shipper/x.py", "from aggregator.y import z\n", "shipper.x imports aggregator.y"),
    ("aggregator/x.py", "import shipper.y\n", "aggregator.x imports shipper.y"),
    ("lake/x.py", "from aggregator import y\n", "lake.x imports aggregator.y"),
])
def test_a_forbidden_import_is_found(tmp_path, rel, text, expected):
    target = expected.split(" imports ")[1]
    graph, _ = _plant(tmp_path, {rel: text, target.replace(".", "/") + ".py": ""})
    assert expected in rule_violations(graph)


def test_an_import_by_name_is_an_import(tmp_path):
    graph, raw = _plant(tmp_path, {"query/x.py": "import importlib\nimportlib.import_module('aggregator.y')\n",
                                   "query/z.py": "__import__('shipper.y')\n", "aggregator/y.py": "",
                                   "shipper/y.py": "", "query/w.py": "import importlib\nimportlib.import_module('duck' + 'db')\n"})
    assert {"query.x imports aggregator.y", "query.z imports shipper.y"} <= set(rule_violations(graph))
    assert COMPUTED in raw["query.w"]


def test_a_cycle_is_found_through_a_relative_and_a_lazy_import(tmp_path):
    graph, _ = _plant(tmp_path, {"lake/a.py": "from .b import x\n",
                                 "lake/b.py": "def f():\n    from lake.c import y\n",
                                 "lake/c.py": "import lake.a\n"})
    assert cycles(graph) == [["lake.a", "lake.b", "lake.c"]]


def test_a_second_owner_of_a_heavy_library_is_found(tmp_path):
    _, raw = _plant(tmp_path, {"query/a.py": "import duckdb\n", "query/b.py": "def f():\n    import duckdb\n",
                               "query/c.py": "import pyarrow.parquet as pq\n", "lake/d.py": "import duckdb\n"})
    owners = heavy_owners(raw)
    assert owners[("query", "duckdb")] == {"query.a", "query.b"}
    assert owners[("lake", "duckdb")] == {"lake.d"}
    assert owners[("query", "pyarrow.parquet")] == {"query.c"}
