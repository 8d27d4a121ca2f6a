"""The layout keeps its promises: engines import without ComfyUI, imports run from nodes to
engines only, and the public interface (node ids, sockets, API twins) is what it was."""

import ast
import glob
import json
import os
import subprocess
import sys

import node_interface

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Engine modules that patch ComfyUI by nature, and why.
NEEDS_COMFYUI = {
    "engine.identity.patch": "patches ComfyUI's Wan model: imports comfy.ldm.wan.model and comfy.model_patcher",
}


def engine_modules():
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "engine", "**", "*.py"), recursive=True)):
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out.append(rel[: -len(".__init__")] if rel.endswith(".__init__") else rel)
    return out


def test_every_engine_module_imports_without_comfyui():
    """A bare interpreter in the repository root (ComfyUI nowhere on its path) imports every engine
    module but the listed ones, and none of them pulls in ComfyUI; the listed ones fail on ComfyUI."""
    modules = engine_modules()
    assert "engine.faces.detect" in modules and "engine.provenance.audit" in modules
    code = (
        "import importlib, json, sys\n"
        f"mods, needs = {modules!r}, {sorted(NEEDS_COMFYUI)!r}\n"
        "res = {}\n"
        "for m in mods:\n"
        "    try:\n"
        "        importlib.import_module(m); res[m] = 'ok'\n"
        "    except ModuleNotFoundError as e:\n"
        "        res[m] = 'missing ' + str(e.name)\n"
        "comfy = sorted(k for k in sys.modules if k == 'comfy' or k.startswith(('comfy.', 'comfy_api', 'folder_paths')))\n"
        "print(json.dumps({'res': res, 'comfy': comfy}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COMFYUI_DIR")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for module, result in out["res"].items():
        if module in NEEDS_COMFYUI:
            assert result.startswith("missing comfy"), (module, result)
        else:
            assert result == "ok", (module, result)
    assert out["comfy"] == [], out["comfy"]


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield 0, a.name, []


def test_imports_run_from_nodes_to_engines_never_back():
    """No engine module imports a node module (relative `..nodes` or the pack's nodes package);
    every node file that imports the pack's machinery takes it from engine/."""
    engine_files = glob.glob(os.path.join(ROOT, "engine", "**", "*.py"), recursive=True)
    assert engine_files
    for path in engine_files:
        depth = os.path.relpath(path, ROOT).count(os.sep)
        for level, module, _ in _imports(path):
            # a relative import climbing to the pack root and down into nodes/
            if level >= depth and module.split(".")[0] == "nodes":
                raise AssertionError(f"{path} imports the node layer ({'.' * level}{module})")
    node_files = glob.glob(os.path.join(ROOT, "nodes", "*.py"))
    uses_engine = 0
    for path in node_files:
        for level, module, _ in _imports(path):
            if level == 2:
                assert module.split(".")[0] == "engine", f"{path}: ..{module}"
                uses_engine += 1
    assert uses_engine >= 8  # the node files do call into the engines


def test_node_ids_sockets_and_api_twins_are_unchanged():
    """Every node's id, inputs (name, type) and outputs, and every template's API twin, equal the
    committed interface (tests/data/node_interface.json, written before the engines moved out of
    nodes/). A deliberate change rewrites that file with `python dev/node_interface.py --write`."""
    import conftest
    with open(os.path.join(HERE, "data", "node_interface.json"), encoding="utf-8") as f:
        pinned = json.load(f)
    now = node_interface.current(conftest.PACK)
    assert sorted(now["nodes"]) == sorted(pinned["nodes"])
    for node_id, spec in pinned["nodes"].items():
        assert now["nodes"][node_id] == spec, node_id
    assert now["api_twins"] == pinned["api_twins"]
