"""Layer contract: gfldet's modules import downward only, and no private name crosses a module boundary."""
import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "gfldet"

# The layer map. A module may import a module of a lower rank, or a module of its own group (the modules of one
# package work together); it may not import a higher rank, nor another group of its own rank. Longest prefix wins.
#
#   rank -1 errors          GfldetError, the user's-mistake error type; imports nothing at all, every module may
#                           import it (ops included: it is the one exception to ops importing only ops)
#   rank 0  ops             tensor maths; imports nothing else of gfldet but errors (ops_out below)
#           files           writing files without losing what was there (atomic writes, the overwrite rule)
#   rank 1  models          the detector, its parts, its config (models.config) and model files (models.io)
#   rank 2  config          gfldet/config.py, the run config tree; its model section is generated from models.config
#   rank 3  data            datasets, transforms, synthetic data, output folders, the inspect-data report
#           viz             pictures (detections, distributions, curves); imports no other gfldet module but errors
#   rank 4  engine          training, evaluation, checkpoints, distributed, preflight, recipe
#   rank 5  app parts       analysis, export, deploy: each its own group, none imports another
#   rank 6  app commands    predict, demo, ship (export in a format / precision): compose the app parts; none
#                           imports another
#   rank 7  cli, __main__   the command line, on top of everything
#
# gfldet/__init__.py (the package face) is exempt both ways: it re-exports from every layer, and importing the bare
# package from inside gfldet (``from . import __version__``) is not checked.
LAYERS = {  # module prefix -> (rank, group)
    "gfldet.errors": (-1, "errors"),
    "gfldet.ops": (0, "ops"),
    "gfldet.files": (0, "files"),
    "gfldet.settings": (0, "settings"),
    "gfldet.models": (1, "models"),
    "gfldet.config": (2, "config"),
    "gfldet.data": (3, "data"),
    "gfldet.viz": (3, "viz"),
    "gfldet.engine": (4, "engine"),
    "gfldet.analysis": (5, "analysis"),
    "gfldet.export": (5, "export"),
    "gfldet.deploy": (5, "deploy"),
    "gfldet.predict": (6, "predict"),
    "gfldet.evaluate": (6, "evaluate"),
    "gfldet.demo": (6, "demo"),
    "gfldet.ship": (6, "ship"),
    "gfldet.cli": (7, "cli"),
    "gfldet.__main__": (7, "cli"),
}

# Known violations, each exact: (importer, imported module, imported name), with a comment saying why. Empty: keep
# it so. An entry that no longer occurs fails test_allowlist_is_current, so the lists can only shrink.
LAYER_ALLOWLIST: set[tuple[str, str, str]] = set()

PRIVATE_ALLOWLIST: set[tuple[str, str, str]] = set()

# Modules outside gfldet.ops that `import gfldet.ops` loads today. The package itself (gfldet/__init__.py, which
# imports its public names lazily) always runs first and is not counted.
OPS_IMPORT_ALLOWLIST: set[str] = set()

# `gfldet.X` names in README.md and docs/*.md that are not Python names (ONNX metadata keys and the like)
NOT_PYTHON_NAMES = {"gfldet.pixel_mean"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def first_party_module(name: str) -> bool:
    top = name.split(".")[0]
    return top in ("gfldet", "tests") or (ROOT / "bench" / f"{top}.py").exists()


def exists_as_module(name: str) -> bool:
    if not name.startswith("gfldet"):
        return False
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports(path: Path):
    """Yield (line, imported module, imported name) for every import in the file, at any depth (see imports_in)."""
    return imports_in(path.read_text(), module_name(path), is_package(path), str(path))


def imports_in(source: str, me: str, package_init: bool = False, filename: str = "<source>"):
    """Yield (line, imported module, imported name) for every import in ``source`` (module ``me``), at any depth.
    ``name`` is the name bound by ``from m import name`` ('' for ``import m``); a ``from pkg import sub`` of a
    submodule yields the submodule as the imported module."""
    package = me if package_init else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ""
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield node.lineno, (sub if exists_as_module(sub) else target), alias.name


def layer(module: str):
    best = None
    for prefix, value in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, value)
    return best[1] if best else None


def python_files(*folders: str):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def layer_violations():
    found = {}
    for path in python_files("gfldet"):
        me = module_name(path)
        if me == "gfldet":
            continue
        mine = layer(me)
        assert mine is not None, f"{me} is in no layer: add it to LAYERS"
        for line, target, name in imports(path):
            if not target.startswith("gfldet.") or target == me:
                continue
            theirs = layer(target)
            assert theirs is not None, f"{target} (imported by {me}) is in no layer: add it to LAYERS"
            upward = theirs[0] > mine[0]
            sibling = theirs[0] == mine[0] and theirs[1] != mine[1]
            ops_out = mine[1] == "ops" and theirs[1] not in ("ops", "errors")
            if upward or sibling or ops_out:
                found.setdefault((me, target, name), line)
    return found


def private_imports():
    found = {}
    for path in python_files("gfldet", "tests", "bench"):
        me = module_name(path)
        for line, target, name in imports(path):
            private = name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
            if private and target != me and first_party_module(target) and not exists_as_module(f"{target}.{name}"):
                found.setdefault((me, target, name), line)
    return found


def _report(found, allow):
    return [f"{a} -> {b} ({name or 'module'}, line {line})" for (a, b, name), line in sorted(found.items())
            if (a, b, name) not in allow]


def test_layers_import_downward():
    bad = _report(layer_violations(), LAYER_ALLOWLIST)
    assert not bad, "imports that go up a layer or across to a sibling:\n" + "\n".join(bad)


def test_no_private_name_crosses_modules():
    bad = _report(private_imports(), PRIVATE_ALLOWLIST)
    assert not bad, "private names imported from another module (make them public):\n" + "\n".join(bad)


def test_allowlist_is_current():
    stale = sorted(LAYER_ALLOWLIST - set(layer_violations())) + sorted(PRIVATE_ALLOWLIST - set(private_imports()))
    assert not stale, "allowlisted imports that no longer occur (delete them from the list):\n" + "\n".join(
        map(str, stale))


def test_the_walker_sees_every_kind_of_import():
    source = ("import gfldet.cli\n"
              "def f():\n"
              "    from ..viz import plot_curves\n"
              "    from . import distributed\n"
              "    if True:\n"
              "        from gfldet.ops.boxes import _x, box_iou\n")
    found = set(imports_in(source, "gfldet.engine.some_module"))
    assert found == {(1, "gfldet.cli", ""), (3, "gfldet.viz", "plot_curves"),
                     (4, "gfldet.engine.distributed", "distributed"), (6, "gfldet.ops.boxes", "_x"),
                     (6, "gfldet.ops.boxes", "box_iou")}
    assert layer("gfldet.engine.some_module") == (4, "engine") and layer("gfldet.viz") == (3, "viz")
    assert layer("gfldet.data.inspect_stats") == (3, "data") and layer("gfldet.config") == (2, "config")


def test_ops_loads_nothing_else_of_gfldet():
    code = ("import sys, gfldet.ops; print('\\n'.join(m for m in sys.modules "
            "if m.split('.')[0] == 'gfldet'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    bottom = ("gfldet", "gfldet.ops", "gfldet.errors")  # the package face; ops imports errors (rank -1) only
    loaded = {m for m in out.split() if not (m in bottom or m.startswith("gfldet.ops."))}
    outside = sorted(loaded - OPS_IMPORT_ALLOWLIST)
    assert not outside, "import gfldet.ops loads modules outside gfldet.ops: " + ", ".join(outside)
    stale = sorted(OPS_IMPORT_ALLOWLIST - loaded)
    assert not stale, "OPS_IMPORT_ALLOWLIST entries no longer loaded (delete them): " + ", ".join(stale)


def test_errors_imports_nothing():
    """gfldet.errors is the bottom: every layer raises its GfldetError, the torch-free runtime (gfldet.deploy) too."""
    found = {target for _, target, _ in imports(PKG / "errors.py")}
    assert found <= {"__future__"}, f"gfldet/errors.py imports {sorted(found)}; it must import nothing"


def test_public_face():
    import gfldet

    assert {"GFL", "build_model", "gfl_resnet50_fpn", "load_model", "from_mmdet", "quality_focal_loss",
            "distribution_focal_loss", "giou_loss", "ModelConfig", "Config"} <= set(gfldet.__all__)
    for name in gfldet.__all__:
        assert getattr(gfldet, name) is not None, name
    assert not any(n.startswith("_") and n != "__version__" for n in gfldet.__all__)
    tree = ast.parse((PKG / "__init__.py").read_text())  # the names for type checkers mirror _EXPORTS, the one list
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    typed = {a.asname or a.name for n in ast.walk(block) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert typed == set(gfldet._EXPORTS) and set(gfldet.__all__) == set(gfldet._EXPORTS) | {"__version__"}
    import gfldet.ops  # lazy too: its __all__ is written out for readers and linters, and must name what it resolves

    assert set(gfldet.ops.__all__) == set(gfldet.ops._EXPORTS)
    for name in gfldet.ops.__all__:
        assert getattr(gfldet.ops, name) is not None, name


def test_names_the_docs_use_resolve():
    """Every ``gfldet.X.Y`` in README.md and docs/*.md names a module or an attribute that exists."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    names = {m.rstrip(".") for p in texts for m in re.findall(r"\bgfldet(?:\.[A-Za-z_][A-Za-z0-9_]*)+", p.read_text())}
    missing = []
    for name in sorted(names - NOT_PYTHON_NAMES):
        parts = name.split(".")
        obj, i = importlib.import_module("gfldet"), 1
        while i < len(parts):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i + 1]))
            except ModuleNotFoundError:
                if not hasattr(obj, parts[i]):
                    missing.append(name)
                    break
                obj = getattr(obj, parts[i])
            i += 1
    assert not missing, "names in README.md / docs that no longer exist: " + ", ".join(missing)
