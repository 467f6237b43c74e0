"""Layering: ``import flowforge`` stays light, and flowforge's modules import without cycles.

``import torch`` itself loads ``argparse`` (through ``unittest``) and ``tqdm`` (through
``torch.hub``), so the light-import check first imports torch, then forgets every module of the
forbidden packages and records whichever of them ``import flowforge`` brings back.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Third-party and standard-library packages that only the command line, plots, progress bars,
# training configs, weights files or the scikit-learn extra need.
HEAVY = ("argparse", "tqdm", "matplotlib", "tomllib", "tomli", "safetensors", "sklearn")
# flowforge modules that `import flowforge` must not load (prefixes).
NOT_ON_IMPORT = ("flowforge.train", "flowforge.cli", "flowforge.__main__")

_LIGHT_PROBE = """
import importlib.abc, json, pathlib, sys, traceback
import torch
heavy = {heavy!r}
for name in [m for m in sys.modules if m.split(".")[0] in heavy]:
    del sys.modules[name]

class Recorder(importlib.abc.MetaPathFinder):
    # Names the flowforge file (and line) whose import statement brought a heavy package in.
    seen = {{}}
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in heavy and top not in self.seen:
            stack = traceback.extract_stack()
            ours = [f for f in stack if "flowforge" in pathlib.Path(f.filename).parts]
            where = ours[-1] if ours else stack[0]
            self.seen[top] = f"{{where.filename}}:{{where.lineno}}"
        return None

sys.meta_path.insert(0, Recorder())
import flowforge
heavy_loaded = sorted({{m.split(".")[0] for m in sys.modules if m.split(".")[0] in heavy}})
flowforge_loaded = sorted(m for m in sys.modules if m.startswith("flowforge"))
print(json.dumps({{"heavy": heavy_loaded, "flowforge": flowforge_loaded, "by": Recorder.seen}}))
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports flowforge from this source tree."""
    env_path = str(SRC)
    return subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@functools.cache
def _modules() -> tuple[str, ...]:
    """Every module of the source tree, by dotted name (packages as their own name)."""
    names = []
    for p in sorted((SRC / "flowforge").rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return tuple(names)


def test_import_flowforge_is_light() -> None:
    proc = _python(_LIGHT_PROBE.format(heavy=HEAVY))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found["heavy"] == [], f"import flowforge loads {found['heavy']} (via {found['by']})"
    loaded = [m for m in found["flowforge"] if m.startswith(NOT_ON_IMPORT)]
    assert loaded == [], f"import flowforge loads {loaded}"
    assert "flowforge.runs" in found["flowforge"]  # ff.load is there, without training


def test_every_module_imports_alone() -> None:
    """Each module, imported first (no other flowforge module loaded), imports cleanly.

    A cycle of ``from a import X`` statements fails when entered from the wrong end; importing
    every module first finds every such entry point. One interpreter serves all modules (torch
    stays loaded; flowforge's modules are forgotten between imports).

    Importing ``flowforge.a.b`` first runs ``import flowforge``, then ``flowforge.a``, then
    ``flowforge.a.b``, each skipped when already loaded. So it is exactly the import of the
    first element ``e`` of that chain after which ``flowforge.a.b`` is loaded: the import of
    ``e`` alone, done once and shared by every module it loads under its own name (``import
    flowforge`` alone stands for each module it loads). The same check as importing each of
    the modules first, with one fresh import per distinct entry instead of one per module
    (about 5x fewer).
    """
    code = f"""
import importlib, json, sys, traceback
import torch
tried = {{}}  # entry -> (traceback or None, the flowforge modules loaded by importing it alone)
def alone(entry):
    if entry not in tried:
        for m in [m for m in sys.modules if m == "flowforge" or m.startswith("flowforge.")]:
            del sys.modules[m]
        try:
            importlib.import_module(entry)
            tried[entry] = (None, {{m for m in sys.modules if m.split(".")[0] == "flowforge"}})
        except Exception:
            tried[entry] = (traceback.format_exc(limit=-3), set())
    return tried[entry]
failed = {{}}
for name in {_modules()!r}:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        error, loaded = alone(".".join(parts[:i]))
        if error is not None:
            failed[name] = error
            break
        if name in loaded:
            break
    else:
        failed[name] = "not loaded by importing it"
print(json.dumps({{"failed": failed, "imports": len(tried)}}))
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    failed = out["failed"]
    assert failed == {}, "\n".join(f"{k}:\n{v}" for k, v in failed.items())
    assert 1 <= out["imports"] <= len(_modules())


@functools.cache
def _imports(name: str, top_level_only: bool, type_only: bool = False) -> frozenset[str]:
    """The flowforge modules that module ``name`` imports (``if TYPE_CHECKING`` left out unless
    ``type_only``; a module-level ``__getattr__``, the lazy re-export of names that moved up
    for old imports, always left out).

    ``from pkg import sub`` counts as importing the module ``pkg.sub`` when it is one.
    """
    known = set(_modules())
    path = SRC / Path(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(nodes: list[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.body if type_only else node.orelse, top)
                continue
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and top:
                continue
            if isinstance(node, ast.Import) and (top or not top_level_only):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (top or not top_level_only):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:
                    out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body, top and isinstance(node, ast.ClassDef))
            else:
                for block in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, block, []), top)

    visit(ast.parse(path.read_text(encoding="utf-8")).body, True)
    return frozenset(m for m in out if m in known)


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]`` when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return []


def test_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_among_modules() -> None:
    """Module-level imports form no cycle.

    Importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first, so it is an edge to those too,
    except to the packages that contain the importing module (already being imported).
    """
    graph: dict[str, set[str]] = {}
    for name in _modules():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for target in _imports(name, top_level_only=True):
            parts = target.split(".")
            chain = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            graph.setdefault(name, set()).update(chain - own - {name})
    cycle = _cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _graph(type_only: bool = True) -> dict[str, set[str]]:
    """Every import between flowforge's modules: module-level, inside functions and (with
    ``type_only``) under ``if TYPE_CHECKING``; importing ``a.b.c`` is an edge to the packages
    ``a`` and ``a.b`` too, except those that contain the importing module."""
    graph: dict[str, set[str]] = {}
    for name in _modules():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        targets = _imports(name, top_level_only=False) | (
            _imports(name, top_level_only=False, type_only=True) if type_only else set()
        )
        for target in targets:
            parts = target.split(".")
            chain = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            graph.setdefault(name, set()).update(chain - own - {name})
    return graph


#: The layers, lowest first: a module imports its own layer's modules and lower layers' only
#: (without a cycle). ``flowforge`` itself is the public face, which no module imports.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core", "_version"),
    ("functional", "nn", "distributions", "data"),
    ("transforms",),
    ("flows",),
    ("dequantization",),
    ("runs",),
    ("fit",),
    ("eval",),
    ("train", "vi", "sbi", "sklearn"),
    ("cli",),
    ("__main__",),
)

#: Parts of one layer that share the layers below and never import each other.
SIBLINGS = ("train", "vi", "sbi", "sklearn")

#: Modules that only re-export names that moved to a higher layer, kept for old imports.
COMPAT = (
    "flowforge.data.dequantization",
    "flowforge.data.dequantized_likelihood",
    "flowforge.data.noise_flows",
)


def _rank(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    return len(LAYERS)  # the package face: above everything


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """The imports of a higher layer, of a sibling, or of the package face."""
    bad = []
    for a, targets in sorted(graph.items()):
        if a in COMPAT:
            continue
        for b in sorted(targets):
            pa, pb = _layer(a).split(".")[-1], _layer(b).split(".")[-1]
            sibling = pa != pb and pa in SIBLINGS and pb in SIBLINGS
            if b == "flowforge" or _rank(b) > _rank(a) or sibling:
                bad.append(f"{a} -> {b}")
    return bad


def test_layer_checker_finds_planted_faults() -> None:
    """An upward import, a sibling's import and an import of the package face are found, and
    so is a cycle, when planted into the real graph."""
    graph = _graph()
    assert _upward(graph) == [] or True  # the real graph is checked below
    planted = {k: set(v) for k, v in graph.items()}
    planted["flowforge.core.flow"].add("flowforge.train.run")
    planted["flowforge.vi.run"].add("flowforge.sklearn.density")
    planted["flowforge.eval.likelihood"].add("flowforge")
    found = set(_upward(planted)) - set(_upward(graph))
    assert found == {
        "flowforge.core.flow -> flowforge.train.run",
        "flowforge.vi.run -> flowforge.sklearn.density",
        "flowforge.eval.likelihood -> flowforge",
    }
    planted["flowforge.transforms.affine"].add("flowforge.transforms.coupling")
    planted["flowforge.transforms.coupling"].add("flowforge.transforms.affine")
    assert _cycle(planted)


def test_no_import_cycle_anywhere() -> None:
    """No cycle among every import of every module: module-level, lazy (inside functions) and
    type-only (``if TYPE_CHECKING``)."""
    cycle = _cycle(_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_upward_import() -> None:
    """Each module imports its own layer and lower ones (:data:`LAYERS`), never a sibling of
    :data:`SIBLINGS` nor the package face ``flowforge``."""
    bad = _upward(_graph())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_layers_form_no_cycle_and_runs_is_below_train_and_cli() -> None:
    """Between flowforge's subpackages (every import, lazy ones included), no cycle: a lower
    layer never imports a higher one. ``flowforge.runs`` uses neither training, evaluation nor
    the command line; training does not use the command line."""
    graph: dict[str, set[str]] = {}
    for name in _modules():
        if name in COMPAT:  # re-exports of names that moved up, for old imports
            continue
        for target in _imports(name, top_level_only=False):
            a, b = _layer(name), _layer(target)
            if a != b and "flowforge" not in (a, b):  # the package root is the public API
                graph.setdefault(a, set()).add(b)
    cycle = _cycle(graph)
    assert not cycle, "subpackages import each other: " + " -> ".join(cycle)
    assert graph["flowforge.runs"].isdisjoint(
        {"flowforge.train", "flowforge.eval", "flowforge.cli"}
    ), graph["flowforge.runs"]
    assert "flowforge.cli" not in graph["flowforge.train"]
    assert "flowforge.runs" in graph["flowforge.train"]
    assert "flowforge.runs" in graph["flowforge.cli"]


@pytest.mark.parametrize("module", ["flowforge.runs", "flowforge.train.losses"])
def test_runs_and_losses_are_light_on_their_own(module: str) -> None:
    """``flowforge.runs`` reads and writes runs without loading safetensors until a file is
    touched; the objectives need no training machinery."""
    code = _LIGHT_PROBE.format(heavy=HEAVY).replace("import flowforge\n", f"import {module}\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found["heavy"] == [], f"import {module} loads {found['heavy']} (via {found['by']})"


def test_moved_names_still_import() -> None:
    """Names that moved to their concept's part keep working where users imported them."""
    import flowforge.data.dequantization as old_deq
    import flowforge.dequantization as deq
    from flowforge.core.distribution import BaseDistribution
    from flowforge.data import UniformDequantizer, VariationalDequantizer
    from flowforge.distributions.base import BaseDistribution as OldBase
    from flowforge.fit import distributed, precision
    from flowforge.fit.device import resolve_device
    from flowforge.runs.checkpoint import load_checkpoint
    from flowforge.runs.figures import write_png
    from flowforge.runs.metrics import MetricsLog
    from flowforge.runs.options import read_toml
    from flowforge.train import auto, batches, checkpoint, config, metrics, plots, run
    from flowforge.train import distributed as old_distributed
    from flowforge.train import precision as old_precision

    assert VariationalDequantizer is deq.VariationalDequantizer
    assert UniformDequantizer is deq.UniformDequantizer
    assert old_deq.conv_encoder is deq.conv_encoder
    assert OldBase is BaseDistribution
    assert checkpoint.load_checkpoint is load_checkpoint and metrics.MetricsLog is MetricsLog
    assert config.read_toml is read_toml and plots.write_png is write_png
    assert run.resolve_device is resolve_device and auto.AUTO == config.AUTO == "auto"
    assert batches.standardized_view is not None and batches.prepare_split is not None
    for moved in (old_distributed, old_precision):  # DDP and precision: the engine's, in fit/
        new = distributed if moved is old_distributed else precision
        assert moved.__all__ == new.__all__
        assert all(getattr(moved, n) is getattr(new, n) for n in new.__all__)
