"""The house rules of ARCHITECTURE.md, checked: the engine/pipeline wall, no import cycle, no
private name crossing a module, a small top level."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import masc_fast

PACKAGE = Path(masc_fast.__file__).parent
# The rooms above the engine (with models/ and data/ beside it): nothing below imports them,
# not even lazily.
ABOVE_THE_ENGINE = ("masc_fast.pipeline", "masc_fast.cli", "masc_fast.testing")
# Who may import whom among those rooms: the CLI drives the pipeline, the test helpers use both.
MAY_IMPORT = {
    "masc_fast.pipeline": ("masc_fast.pipeline",),
    "masc_fast.cli": ("masc_fast.cli", "masc_fast.pipeline"),
    "masc_fast.testing": ("masc_fast.testing", "masc_fast.pipeline"),
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package)}`` for every source module of masc_fast."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _imports(name: str, path: Path, is_package: bool, known) -> list[tuple[str, str | None]]:
    """Every masc_fast module ``name`` imports, at any depth (functions included), with the
    imported attribute for ``from`` imports: [(module, attribute or None)]."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((submodule, None) if submodule in known else (target, alias.name))
    return [(module, attribute) for module, attribute in found if module.startswith("masc_fast")]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {
            target for target, _ in _imports(name, path, is_package, modules) if target in modules
        }
        for name, (path, is_package) in modules.items()
    }


def test_the_package_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _room(name: str) -> str | None:
    return next((room for room in ABOVE_THE_ENGINE if name.startswith(room)), None)


def test_the_engine_never_imports_the_pipeline_cli_or_test_helpers():
    graph = _graph()
    assert "masc_fast.probing.fit_pass" in graph and "masc_fast.pipeline.demo" in graph
    crossings = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        for target in targets
        if _room(target) is not None and _room(target) not in MAY_IMPORT.get(_room(name), ())
    )
    assert not crossings, crossings


def test_no_private_name_crosses_a_module():
    modules = _modules()
    allowed = {"_C", "__version__"}  # the compiled extension is a module; the version is public
    crossings = sorted(
        f"{name} imports {attribute} from {target}"
        for name, (path, is_package) in modules.items()
        for target, attribute in _imports(name, path, is_package, modules)
        if attribute and attribute.startswith("_") and attribute not in allowed and target != name
    )
    assert not crossings, crossings


def test_the_top_level_holds_at_most_fifteen_modules():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 15, top


_WALL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch import nn
    import masc_fast

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = torch.randn(90, 12), torch.arange(90) % 3
    result = masc_fast.probe(model, [(x, y, y)], {"test": [(x, y)]}, progress=False)
    assert set(result.table["layer"]) == {"input", "0", "2"}, set(result.table["layer"])
    print(json.dumps(sorted(sys.modules)))
    """
)


def test_import_and_probe_load_no_pipeline_cli_report_sweep_torchvision_or_matplotlib():
    done = subprocess.run(
        [sys.executable, "-c", _WALL_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "masc_fast.probing.fit_pass" in loaded  # the probe did run
    forbidden = (*ABOVE_THE_ENGINE, "torchvision", "matplotlib")
    wrong = [
        name for name in loaded if name.split(".")[0] in forbidden or name.startswith(forbidden)
    ]
    assert not wrong, wrong
