"""The pack folder imports cleanly outside ComfyUI and registers itself inside it."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_outside_comfyui_does_not_crash():
    """A bare interpreter (no ComfyUI on sys.path), importing the folder as a package and the
    file on its own, as test collectors do: neither raises, neither exposes the entry point."""
    code = (
        "import importlib.util, sys\n"
        f"root = {ROOT!r}\n"
        "spec = importlib.util.spec_from_file_location('standin_pkg', root + '/__init__.py', submodule_search_locations=[root])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['standin_pkg'] = m; spec.loader.exec_module(m)\n"
        "spec2 = importlib.util.spec_from_file_location('__init__', root + '/__init__.py')\n"
        "m2 = importlib.util.module_from_spec(spec2); spec2.loader.exec_module(m2)\n"
        "assert not hasattr(m, 'comfy_entrypoint') and not hasattr(m2, 'comfy_entrypoint')\n"
        "print('clean')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clean"


def test_inside_comfyui_the_pack_exposes_its_v3_entry_point():
    import conftest
    assert hasattr(conftest.PACK, "comfy_entrypoint")
