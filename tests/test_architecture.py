"""The import contract of the engine (see docs/ARCHITECTURE.md), checked on the source with ``ast``.

Every import counts, also the ones inside functions (a lazy import is still a dependency):

* layers, top to bottom: entry points (``cli``, ``cascade``, ``demo``) -> ``stages`` -> ``sampling``
  -> ``models`` -> ``artefacts`` -> ``media`` -> ``core``; a module may import its own layer and the
  layers below it, never one above;
* the stage packages (``stages/<name>``) are independent: no stage imports another stage;
* no import cycle between engine modules;
* ComfyUI (``comfy``, ``comfy_api``, ``comfy_extras``, ``folder_paths``, ``server``, ``nodes`` of
  ComfyUI) is imported only by ``nodes/comfy_bridge.py`` and ``nodes/comfy_native.py``; the engine
  never imports the node layer;
* every module of the repository (engine, nodes, scripts, benchmarks, tests) stays under 400 lines and
  every function under 80.

The checker is a plain function over a ``{module: {imported modules}}`` graph, so the tests below
also prove that it *fails* on a stage -> stage import and on a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = "avatar_cascade"
LAYERS = (
    (
        "entry",
        (
            "avatar_cascade.cli",
            "avatar_cascade.cli_control",
            "avatar_cascade.cascade",
            "avatar_cascade.cascade_models",
            "avatar_cascade.preflight",
            "avatar_cascade.demo",
            "avatar_cascade.assets",
            "avatar_cascade.__main__",
        ),
    ),
    ("stages", ("avatar_cascade.stages",)),
    ("sampling", ("avatar_cascade.sampling",)),
    ("models", ("avatar_cascade.models",)),
    ("artefacts", ("avatar_cascade.artefacts",)),
    ("media", ("avatar_cascade.media",)),
    ("core", ("avatar_cascade.core",)),
)
COMFY_TOP = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "latent_preview"}
BRIDGE = ("nodes.comfy_bridge", "nodes.comfy_native")  # the bridge, and its native-MODEL half
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
SIZED_FOLDERS = (ENGINE, "nodes", "scripts", "benchmarks", "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_files(*folders: str) -> list[Path]:
    out = []
    for folder in folders:
        out += [p for p in (ROOT / folder).rglob("*.py") if "configs" not in p.parts]
    return sorted(out)


def imports_of(path: Path, known: set[str], module: str | None = None) -> set[str]:
    """Every module ``path`` imports (anywhere in the file); ``from pkg import sub`` counts as ``pkg.sub``."""
    mod = module or module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in known else target)
    return out


def layer_of(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == [ENGINE, "stages"] else None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (as a list of modules), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph:
                continue
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every broken rule of the contract in ``graph`` ({module: imported modules})."""
    out = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            top = dep.split(".")[0]
            if top in COMFY_TOP and mod not in BRIDGE:
                out.append(f"{mod} imports ComfyUI ({dep}); only {' and '.join(BRIDGE)} may")
            if mod.startswith(ENGINE) and (dep == "nodes" or dep.startswith("nodes.")):
                out.append(f"{mod} (engine) imports the node layer ({dep})")
            if not (mod.startswith(ENGINE + ".") and dep.startswith(ENGINE + ".")):
                continue
            a, b = stage_of(mod), stage_of(dep)
            if a and b and a != b:
                out.append(f"stage {a} imports stage {b}: {mod} -> {dep}")
            la, lb = layer_of(mod), layer_of(dep)
            if la is not None and lb is not None and lb < la:
                out.append(f"{mod} ({LAYERS[la][0]}) imports a higher layer: {dep} ({LAYERS[lb][0]})")
    engine = {m: {d for d in deps if d.startswith(ENGINE)} for m, deps in graph.items() if m.startswith(ENGINE)}
    cycle = find_cycle(engine)
    if cycle:
        out.append("import cycle: " + " -> ".join(cycle))
    return out


def project_graph() -> dict[str, set[str]]:
    files = source_files(ENGINE, "nodes") + [ROOT / "__init__.py"]
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, known) for p in files}


def test_the_project_keeps_the_import_contract():
    assert violations(project_graph()) == []


def test_every_engine_module_has_a_layer():
    loose = [m for m in project_graph() if m.startswith(ENGINE + ".") and layer_of(m) is None]
    assert loose == [], "place these modules in a layer package (see docs/ARCHITECTURE.md)"


def test_a_stage_importing_another_stage_is_caught():
    graph = project_graph()
    graph["avatar_cascade.stages.refiner.refiner"].add("avatar_cascade.stages.keyframes.extractor")
    found = violations(graph)
    assert any("stage refiner imports stage keyframes" in v for v in found), found


@pytest.mark.parametrize(
    "importer, imported, says",
    [
        ("avatar_cascade.core.cache", "avatar_cascade.sampling.loop", "higher layer"),
        ("avatar_cascade.models.wan_dit", "avatar_cascade.stages.refiner.refiner", "higher layer"),
        ("avatar_cascade.artefacts.timeline", "avatar_cascade.models.files", "higher layer"),
        ("avatar_cascade.stages.blueprint.sampler", "comfy.model_management", "imports ComfyUI"),
        ("nodes.refiner", "folder_paths", "imports ComfyUI"),
        ("avatar_cascade.media.video", "nodes.comfy_bridge", "node layer"),
    ],
)
def test_broken_layering_is_caught(importer, imported, says):
    graph = project_graph()
    graph[importer].add(imported)
    assert any(says in v and importer in v for v in violations(graph))


def test_a_cycle_is_caught():
    graph = project_graph()
    graph["avatar_cascade.models.offload"].add("avatar_cascade.models.lora")  # lora -> offload already
    assert any(v.startswith("import cycle") for v in violations(graph))


def test_a_lazy_import_inside_a_function_counts(tmp_path):
    graph = project_graph()
    fake = tmp_path / "refiner.py"
    fake.write_text("def f():\n    from avatar_cascade.stages.blueprint import sampler\n    return sampler\n")
    name = "avatar_cascade.stages.refiner.refiner"
    graph[name] = imports_of(fake, set(graph), module=name)
    assert "avatar_cascade.stages.blueprint.sampler" in graph[name]
    assert any("stage refiner imports stage blueprint" in v for v in violations(graph))


def _long_functions(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_modules_and_functions_stay_small():
    files = source_files(*SIZED_FOLDERS) + [ROOT / "__init__.py"]
    sizes = {p: len(p.read_text().splitlines()) for p in files}
    big = [f"{p.relative_to(ROOT)} ({n} lines)" for p, n in sizes.items() if n > MAX_MODULE_LINES]
    assert big == [], f"split these modules (guide: < {MAX_MODULE_LINES} lines)"
    long = [x for p in files for x in _long_functions(p)]
    assert long == [], f"split these functions (guide: < {MAX_FUNCTION_LINES} lines)"
