"""The package's shape is part of its design: layers that only import downward,
no import cycles (lazy imports inside functions count), and a core that needs
pyzmq and nothing else."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import zeromesh

pytestmark = pytest.mark.timeout(60)

ROOT = Path(zeromesh.__file__).parent

#: Lowest first. A module may import modules of its own layer or below only.
LAYERS: list[set[str]] = [
    {"timing", "errors"},
    {"endpoints", "wire", "ext", "logs", "metadata", "lines"},
    {"protocol", "directory"},
    {"transport", "security"},
    {"sockets"},
    {"options"},
    {"peer", "proxy"},
    {"asyncio", "metrics", "members"},
    {"zeromesh"},  # the package itself (its __init__ re-exports the core)
    {"testing"},
    {"harness", "bench"},
    {"cli", "__main__"},
]
#: Third-party imports the core may use; everything else belongs behind an extra.
CORE_THIRD_PARTY = {"zmq"}
#: Imported lazily, inside the one function that needs it (an extra).
CORE_LAZY_EXTRAS = {"prometheus_client"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str, path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, at module level?) for every import in the file,
    relative ones resolved; ``from X import y`` counts y when it is a module."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, id(node) in top_level
            for alias in node.names:
                yield f"{target}.{alias.name}", id(node) in top_level


def internal_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, _ in imports(name, path):
            if target in mods and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    for i, layer in enumerate(LAYERS):
        if key in layer:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py: place it")


def test_every_module_has_a_layer_and_imports_only_downward() -> None:
    wrong = [
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
        for m, targets in internal_graph().items()
        for t in targets
        if layer_of(t) > layer_of(m)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_lazy_imports_included() -> None:
    graph = internal_graph()
    # Subpackage __init__ files are containers: an edge into "a.b" from "a.b.c"
    # is the package being imported, not a cycle of modules.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t) :], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_core_imports_pyzmq_and_the_standard_library_only() -> None:
    core = {m: p for m, p in modules().items() if layer_of(m) <= layer_of("zeromesh")}
    wrong = []
    for name, path in core.items():
        for target, at_top in imports(name, path):
            top = target.split(".")[0]
            if not top or top == "zeromesh" or top in sys.stdlib_module_names or top in CORE_THIRD_PARTY:
                continue
            if top in CORE_LAZY_EXTRAS and not at_top:
                continue
            wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_importing_the_library_and_the_peer_command_loads_no_harness() -> None:
    code = (
        "import sys, zeromesh, zeromesh.cli.peer, zeromesh.cli.proxy;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'psutil', 'rich', 'matplotlib', 'scipy', 'numpy', 'pyre', 'prometheus_client'}"
        " or m.startswith(('zeromesh.harness', 'zeromesh.bench', 'zeromesh.testing')));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == ""
