"""Errors and warnings where the user sees them, through a real ComfyUI server: bad sizes and a
missing adapter refuse the whole prompt at queue time (HTTP 400, the frontend's error dialog),
sizes that only exist at run time fail before sampling, warnings reach the node."""

import pytest

import tiny_models
import workflows
from comfy_server import PromptRejected

from conftest import FACE


@pytest.fixture(scope="module")
def server(comfy_server):
    return comfy_server


def tiny(name, **kw):
    return tiny_models.tiny_variant(workflows.load_api(name), dit=tiny_models.TINY_DIT, adapter=tiny_models.TINY_ADAPTER,
                                    vae=tiny_models.TINY_VAE, image=FACE, **kw)


def refused(server, prompt):
    """POST /prompt must answer 400 (nothing queued, nothing run); returns the node errors."""
    before = len(server.get("/history") or {})
    with pytest.raises(PromptRejected) as err:
        server.queue(prompt)
    assert err.value.status == 400, err.value.body
    assert err.value.body["error"]["type"] == "prompt_outputs_failed_validation"
    assert len(server.get("/history") or {}) == before
    return err.value.body["node_errors"]


def details(node_errors, node_id):
    return " ".join(e["details"] for e in node_errors[node_id]["errors"])


def execution_error(entry):
    for kind, data in entry["status"]["messages"]:
        if kind == "execution_error":
            return data["node_id"], data["exception_message"]
    return None, None


def test_bad_video_size_is_refused_at_queue_time_with_the_sizes_to_use(server):
    prompt = tiny("standin_wan21_t2v_sample_video")
    prompt["13"]["inputs"].update(width=250, length=18)
    errors = refused(server, prompt)
    text = details(errors, "13")
    assert "width 250 is not a multiple of 16 (use 240 or 256)" in text
    assert "length 18 is not of the form 4n+1 (use 17 or 21 frames)" in text
    # The reference preview branch (valid on its own) did not run either: the whole prompt is refused.
    assert set(errors) == {"13"}
    prompt["13"]["inputs"].update(width=64, height=8, length=5)
    assert "height 8 is outside 16..8192" in details(refused(server, prompt), "13")


def test_a_bad_width_is_the_only_input_the_refusal_names(server):
    """ComfyUI files a validate_inputs refusal under every input the check reads (width, height
    and length, each marked on the canvas); every one of those entries must say that only the
    width is to change and that the height and length typed in are fine."""
    prompt = tiny("standin_wan21_t2v_sample_video")
    inputs = prompt["13"]["inputs"]
    inputs["width"] = 250
    errors = refused(server, prompt)["13"]["errors"]
    assert errors
    fine = f"Change width only; height {inputs['height']} and length {inputs['length']} are fine."
    for error in errors:
        assert "width 250 is not a multiple of 16 (use 240 or 256)" in error["details"]
        assert error["details"].endswith(fine), error
        assert "height" not in error["details"].split(" - ", 1)[1].split(". Change")[0]


def test_linked_video_size_fails_before_sampling(server):
    """A size wired from another node is only known at run time: Sample Video fails when it
    starts, before any sampling step."""
    prompt = tiny("standin_wan21_t2v_sample_video")
    prompt["30"] = {"class_type": "PrimitiveInt", "inputs": {"value": 250}}
    prompt["13"]["inputs"]["width"] = ["30", 0]
    events = []

    async def on_event(event, session):
        events.append(event)

    import asyncio
    _, end = asyncio.run(server.follow(prompt, on_event, timeout=600))
    assert end["type"] == "execution_error", end
    assert end["data"]["node_id"] == "13"
    assert "width 250 is not a multiple of 16 (use 240 or 256)" in end["data"]["exception_message"]
    assert not [e for e in events if e["type"] == "progress" and e["data"].get("node") == "13"]


def test_a_connected_latent_makes_the_size_widgets_unused(server):
    prompt = tiny("standin_wan21_t2v_sample_video")
    prompt["30"] = {"class_type": "EmptyHunyuanLatentVideo",
                    "inputs": {"width": 64, "height": 64, "length": 5, "batch_size": 1}}
    prompt["13"]["inputs"].update(width=250, length=18, latent=["30", 0])
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", execution_error(entry)


def test_missing_adapter_refuses_the_whole_prompt_with_the_file_and_the_command(server):
    prompt = tiny("standin_wan21_t2v_sample_video")
    prompt["7"]["inputs"]["adapter_name"] = "Stand-In_wan2.1_T2V_14B.ckpt"
    errors = refused(server, prompt)
    text = details(errors, "7")
    assert "Stand-In_wan2.1_T2V_14B.ckpt" in text and "huggingface.co/BowenXue/Stand-In" in text
    assert "tools/download_weights.py" in text
    # Without the hook ComfyUI would have run the preview branch (9) and answered 200.
    assert set(errors) == {"7"}


def test_the_printed_download_command_works_as_printed(server):
    """The command at the end of the missing-adapter message runs from any folder and aims at
    the server's own models folder (here --dry-run is added so nothing is fetched)."""
    import os
    import shlex
    import subprocess
    prompt = tiny("standin_wan21_t2v_sample_video")
    prompt["7"]["inputs"]["adapter_name"] = "Stand-In_wan2.1_T2V_14B.ckpt"
    text = details(refused(server, prompt), "7")
    command = shlex.split(text.split("or run: ", 1)[1])
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_DIR"}
    proc = subprocess.run(command + ["--dry-run"], cwd="/", env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    target = os.path.join(server.base_dir, "models", "standin", "Stand-In_wan2.1_T2V_14B.ckpt")
    assert f"Stand-In_wan2.1_T2V_14B.ckpt: missing -> {target}" in proc.stdout


def test_a_valid_prompt_runs_unchanged(server):
    """The hook leaves valid prompts alone: every output runs."""
    entry = server.run(tiny("standin_wan21_t2v_sample_video"))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    assert {"9", "21"} <= set(entry["outputs"])


# ------------------------------------------------------------------------------------
# Warnings on the node: ComfyUI's progress text (binary websocket message 3) and /history
# ------------------------------------------------------------------------------------

def progress_texts(server, prompt, timeout=300):
    """Queue ``prompt`` with the websocket open; (end event, [(node_id, text)] of progress text)."""
    import asyncio
    import json
    import struct
    import time

    import aiohttp

    async def go():
        texts = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId={server.client_id}") as ws:
                prompt_id = await asyncio.get_running_loop().run_in_executor(None, server.queue, prompt)
                deadline = time.time() + timeout
                while time.time() < deadline:
                    msg = await ws.receive(timeout=max(1.0, deadline - time.time()))
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        (kind,) = struct.unpack(">I", msg.data[:4])
                        if kind == 3:  # BinaryEventTypes.TEXT: node id length, node id, text
                            (n,) = struct.unpack(">I", msg.data[4:8])
                            texts.append((msg.data[8:8 + n].decode(), msg.data[8 + n:].decode()))
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        event = json.loads(msg.data)
                        if (event["type"] in server.END_EVENTS
                                and event.get("data", {}).get("prompt_id") == prompt_id):
                            return event, texts, prompt_id
        raise TimeoutError("no end of execution")

    return asyncio.run(go())


def reference_prompt(image):
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "VAELoader", "inputs": {"vae_name": tiny_models.TINY_VAE}},
            "3": {"class_type": "StandIn_EncodeReferenceFace",
                  "inputs": {"image": ["1", 0], "vae": ["2", 0], "detector": "auto", "white_background": True}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}


def test_reference_warnings_are_shown_on_the_node(server):
    import os

    from PIL import Image

    from conftest import CAT
    small = "standin_small_reference.png"
    Image.open(os.path.join(server.base_dir, "input", FACE)).resize((152, 152)).save(
        os.path.join(server.base_dir, "input", small))

    end, texts, prompt_id = progress_texts(server, reference_prompt(small))
    assert end["type"] == "execution_success", end
    shown = [t for node, t in texts if node == "3"]
    assert len(shown) == 1 and "The reference is only" in shown[0], texts
    # /history keeps the same warnings in the node's UI output, for API users.
    history = server.get(f"/history/{prompt_id}")[prompt_id]
    assert any("The reference is only" in line for line in history["outputs"]["3"]["text"])

    end, texts, _ = progress_texts(server, reference_prompt(CAT))
    assert end["type"] == "execution_success", end
    shown = [t for node, t in texts if node == "3"]
    assert len(shown) == 1 and "No face found" in shown[0], texts

    # A large enough reference shows nothing (the astronaut's face crop is 152 px at 512x512).
    large = "standin_large_reference.png"
    Image.open(os.path.join(server.base_dir, "input", FACE)).resize((1024, 1024)).save(
        os.path.join(server.base_dir, "input", large))
    end, texts, _ = progress_texts(server, reference_prompt(large))
    assert end["type"] == "execution_success" and not [t for node, t in texts if node == "3"], texts


def test_running_only_other_outputs_is_left_alone(server):
    """When the user runs only some outputs (the frontend's partial execution), a refused node
    that none of them needs does not stop them: here the reference preview alone, with the
    adapter missing."""
    prompt = tiny("standin_wan21_t2v_sample_video")
    prompt["7"]["inputs"]["adapter_name"] = "Stand-In_wan2.1_T2V_14B.ckpt"
    answer = server.post("/prompt", {"prompt": prompt, "client_id": server.client_id,
                                     "partial_execution_targets": ["9"]})
    entry = server.wait(answer["prompt_id"])
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    assert "9" in entry["outputs"] and "21" not in entry["outputs"]


def test_in_the_frontend_a_missing_adapter_opens_the_error_dialog_and_warnings_show_on_the_node(server, tmp_path):
    """Where the user sees them, in the real frontend (headless Chromium): Run with the adapter
    missing opens ComfyUI's error dialog naming the file and the command (before, the preview
    branch ran and the queue said "1 job completed"); a small reference's warning is drawn on
    Encode Reference Face (the frontend's text preview widget, filled from the progress text).
    (A width of 250 cannot be typed on the canvas: the widget snaps to its step of 16. Sizes
    are refused at queue time over the API, tested above.)"""
    import json
    import os

    from PIL import Image

    import frontend
    if frontend.chromium_path() is None:
        pytest.fail("Chromium is not installed (make test installs it where apt-get runs as root)")
    small = "standin_small_reference.png"
    Image.open(os.path.join(server.base_dir, "input", FACE)).resize((152, 152)).save(
        os.path.join(server.base_dir, "input", small))
    bad = tiny("standin_wan21_t2v_sample_video")
    bad["7"]["inputs"]["adapter_name"] = "Stand-In_wan2.1_T2V_14B.ckpt"
    settings = server.get("/settings")
    tutorial = bool(settings.get("Comfy.TutorialCompleted"))
    server.post("/settings/Comfy.TutorialCompleted", True)

    async def check(cdp):
        await cdp.evaluate(f"window.app.loadApiJson(JSON.parse({json.dumps(json.dumps(bad))}), 'bad_size')")
        await cdp.evaluate("window.app.queuePrompt(0, 1)")
        # Frontend 1.32 opens an error dialog with the message; newer ones (1.48 of ComfyUI 0.33)
        # show "N errors found" with a "View details" button that opens the errors panel.
        await cdp.wait_for("document.body.innerText.includes('Prompt outputs failed validation') || "
                           "[...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'View details')",
                           timeout=60)
        await cdp.evaluate("(() => { const b = [...document.querySelectorAll('button')]"
                           ".find(b => b.innerText.trim() === 'View details'); if (b) b.click(); })()")
        await cdp.wait_for("document.body.innerText.includes('Stand-In_wan2.1_T2V_14B.ckpt')", timeout=60)
        # In the errors panel our message is behind the error's info button.
        await cdp.evaluate("document.querySelector('button[aria-label^=\"Info for Load Identity Adapter\"]')?.click()")
        await cdp.wait_for("document.body.innerText.includes('download_weights.py')", timeout=60)
        await cdp.screenshot(str(tmp_path / "error_dialog.png"))
        await cdp.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape",
                       windowsVirtualKeyCode=27)
        await cdp.call("Input.dispatchKeyEvent", type="keyUp", key="Escape", code="Escape",
                       windowsVirtualKeyCode=27)
        ref = json.dumps(json.dumps(reference_prompt(small)))
        await cdp.evaluate(f"window.app.loadApiJson(JSON.parse({ref}), 'small_reference')")
        await cdp.evaluate("window.app.queuePrompt(0, 1)")
        condition = ("window.app.graph.nodes.some(n => n.type === 'StandIn_EncodeReferenceFace' && "
                     "(n.widgets || []).some(w => w.name === '$$node-text-preview' && "
                     "String(w.value).includes('The reference is only')))")
        await cdp.wait_for(condition, timeout=120)
        await cdp.screenshot(str(tmp_path / "warning_on_node.png"))
        return True

    try:
        with frontend.Frontend(server.url) as fe:
            assert fe.run(check, timeout=300)
    finally:
        server.post("/settings/Comfy.TutorialCompleted", tutorial)
    print("screenshots:", tmp_path)
