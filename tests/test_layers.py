"""How the packages fit together: imports go one way (audio -> model -> search -> agile -> command line and
page), no module imports one that imports it back (function-local imports counted), and the light parts
and the command line start without torch or transformers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Layers, lowest first; a module may import only from its own layer or below. Modules not listed (the
# base: errors, vocabulary, prompts, faults, atomic, locks, extras, device, audio, windows, features,
# precision, presets, tokenizer, synthetic, metrics, deployments, species_lists) are layer 0.
LAYERS = {
    "biolingual.model": 1,
    "biolingual.loading": 1,
    "biolingual.embedding": 1,
    "biolingual.data": 1,
    "biolingual.loss": 1,
    "biolingual.search": 2,
    "biolingual.training": 2,
    "biolingual.agile": 3,
    "biolingual.cli": 4,
    "biolingual.cli_options": 0,
    "biolingual.__main__": 4,
    "biolingual.agile.cli": 4,
    "biolingual.agile.review_cli": 4,
    "biolingual.agile.hoplite_cli": 4,
    "biolingual.search.cli": 4,
    "biolingual.agile.app": 4,
    "biolingual.agile.routes": 4,
    "biolingual.agile.server": 4,
    "biolingual.agile.guard": 4,
}


def _layer(module: str) -> int:
    best = ""
    for name in LAYERS:
        if (module == name or module.startswith(name + ".")) and len(name) > len(best):
            best = name
    return LAYERS.get(best, 0)


def import_graph(package: str = "biolingual") -> dict[str, set[str]]:
    """module -> the project's modules it imports anywhere in its file (top level or inside functions)."""
    modules = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = (
                    ".".join(
                        base.split(".")[: len(base.split(".")) - node.level + 1]
                        + ([node.module] if node.module else [])
                    )
                    if node.level
                    else node.module or ""
                )
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if (
                    target and target != name and not name.startswith(target + ".")
                ):  # a package's own __init__ is not an edge
                    found.add(target)
        graph[name] = found
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_counting_function_local_imports():
    graph = import_graph()
    assert "biolingual.windows" in graph["biolingual.model"]  # the graph sees what it should (a sanity check)
    assert _cycles(graph) == []


def test_imports_go_down_the_layers():
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert upward == []


@pytest.mark.parametrize(
    "code",
    [
        "import biolingual.audio, biolingual.windows, biolingual.agile.density, biolingual.agile.labels",
        "import biolingual.deployments, biolingual.species_lists, biolingual.prompts",
        "import biolingual.search.hoplite, biolingual.agile.hoplite",  # perch-hoplite databases in and out
        "from biolingual.cli import build_parser; build_parser().format_help()",
    ],
)
def test_light_parts_and_the_command_line_start_without_torch_or_transformers(code):
    """The audio loader, the window reader, the label store and `biolingual --help` (its parser) load neither
    torch (about 2 s) nor transformers (about 3 s more): the heavy parts load when a command needs a model."""
    check = f"import sys; {code}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
