"""The package's shape, read from its source with ast: no import cycle, the layers' dependency rule, no
module over 400 lines, and a client that loads no server code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from streaming_api.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "streaming_api"
MAX_MODULE_LINES = 400

# What each part may import, besides itself. The bottom (names, settings, tokens, grants, links) may import
# only the bottom; the client nothing of the package (it learns a table's columns from the body); cli may import
# everything and nothing imports cli.
ALLOWED = {
    "bottom": {"bottom"},
    "db": {"bottom"},
    "export": {"bottom", "db"},
    "web": {"bottom", "db", "export"},
    "client": set(),
    "bench": {"bottom", "db", "client"},
    "cli": {"bottom", "db", "export", "web", "client", "bench"},
}
BOTTOM = {"names", "settings", "tokens", "grants", "links", "__init__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The package's own modules this module imports, anywhere in it (also inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # `from . import x` imports the module x, when there is one.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    modules = _modules()
    return {m for m in found if m in modules and m != name}


def _part(module: str) -> str:
    if module == "streaming_api.__main__":
        return "cli"  # an entry point, like run.py
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BOTTOM:
        return "bottom"
    return parts[1]


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in _modules().items()}


def _breaches(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in graph.items():
        own = _part(module)
        allowed = ALLOWED[own] | {own}
        for target in imported:
            part = _part(target)
            if part not in allowed:
                found.append(f"{module} imports {target} ({own} may use {', '.join(sorted(allowed))})")
    return found


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    # A package's __init__ may import its children for re-export; a child importing its own parent package
    # is not a cycle of code, so those edges are left out.
    edges = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    visiting: list[str] = []
    done: set[str] = set()
    found = []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            found.append(" -> ".join([*visiting[visiting.index(module) :], module]))
            return
        visiting.append(module)
        for target in sorted(edges.get(module, ())):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)
    return found


def test_no_module_imports_a_part_above_its_own():
    assert not (breaches := _breaches(_graph())), "\n".join(breaches)


def test_there_is_no_import_cycle():
    assert not (cycles := _cycles(_graph())), "\n".join(cycles)


def test_the_checks_catch_a_breach_and_a_cycle():
    """Neither check is vacuous: the real graph has the edges they judge, and a bad edge fails them."""
    graph = _graph()
    assert "streaming_api.db.lanes" in graph["streaming_api.export.pages"]
    breach = {**graph, "streaming_api.export.pages": graph["streaming_api.export.pages"] | {"streaming_api.web.keys"}}
    assert _breaches(breach) == [
        "streaming_api.export.pages imports streaming_api.web.keys (export may use bottom, db, export)"
    ]
    assert "streaming_api.db.catalog" in graph["streaming_api.db.statements"]
    cycle = {**graph, "streaming_api.db.catalog": graph["streaming_api.db.catalog"] | {"streaming_api.db.statements"}}
    assert "streaming_api.db.catalog -> streaming_api.db.statements -> streaming_api.db.catalog" in _cycles(cycle)


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_over_400_lines(name):
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines"


SERVER_MODULES = ("asyncpg", "sqlalchemy", "aiohttp.web", "streaming_api.web", "streaming_api.db")


def test_the_client_loads_no_server_code():
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, streaming_api.client; print(' '.join(m for m in {SERVER_MODULES!r} if m in sys.modules))",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == ""


def test_the_readme_stays_a_manual_of_a_few_screens():
    # Results, internals and long tables belong in docs/: the README is the user's manual.
    size = len((PROJECT_ROOT / "README.md").read_bytes())
    assert size <= 16_000, f"README.md is {size:,} bytes: move details to docs/"
