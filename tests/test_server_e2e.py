"""End to end against a real ComfyUI server process: /object_info, POST /prompt, /history,
the websocket, /interrupt and /free, with the shipped example workflows."""

import os
import shutil
import urllib.request

import pytest
import safetensors.torch
import torch
from PIL import Image

import tiny_models
import workflows
from comfy_server import PromptRejected

from conftest import CAT, FACE

NODE_IDS = ["StandIn_LoadIdentityAdapter", "StandIn_EncodeReferenceFace", "StandIn_ApplyRSACPM", "StandIn_SampleVideo"]


@pytest.fixture(scope="module")
def server(comfy_server):
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def tiny(name, image=FACE, **kw):
    return tiny_models.tiny_variant(workflows.load_api(name), dit=tiny_models.TINY_DIT, adapter=tiny_models.TINY_ADAPTER,
                                    vae=tiny_models.TINY_VAE, image=image, **kw)


def output_files(server, entry, key=None):
    files = []
    for node_out in entry["outputs"].values():
        for k, items in node_out.items():
            if key is not None and k != key:
                continue
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    files.append(os.path.join(server.base_dir, item.get("type", "output"), item.get("subfolder", ""), item["filename"]))
    return files


def read_latent(server, entry):
    (path,) = output_files(server, entry, "latents")
    return safetensors.torch.load_file(path)["latent_tensor"]


def error_message(entry):
    for kind, data in entry["status"]["messages"]:
        if kind == "execution_error":
            return data["node_id"], data["exception_message"]
    return None, None


def assert_success(server, entry):
    assert entry["status"]["status_str"] == "success", (error_message(entry), server.log_tail())


# ------------------------------------------------------------------------------------

def test_object_info_lists_the_four_nodes(object_info):
    for node_id in NODE_IDS:
        info = object_info[node_id]
        assert info["category"] == "Stand-In"
        assert info["display_name"] and info["description"]
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(info["output_tooltips"]), f"{node_id} has an output without tooltip"
    assert object_info["StandIn_LoadIdentityAdapter"]["output"] == ["STANDIN_ADAPTER"]
    assert object_info["StandIn_EncodeReferenceFace"]["output"] == ["STANDIN_IDENTITY", "IMAGE"]
    apply_inputs = object_info["StandIn_ApplyRSACPM"]["input"]["required"]
    assert [apply_inputs[k][0] for k in ("model", "adapter", "identity")] == ["MODEL", "STANDIN_ADAPTER", "STANDIN_IDENTITY"]
    assert {"strength", "start_percent", "end_percent"} <= set(apply_inputs)
    sample = object_info["StandIn_SampleVideo"]["input"]
    assert {"model", "positive", "negative", "width", "height", "length", "steps", "cfg", "sampler_name",
            "scheduler", "seed", "denoise"} <= set(sample["required"])
    assert {"latent", "model_2", "vae"} <= set(sample["optional"])
    assert sample["required"]["seed"][1]["control_after_generate"] is True
    assert object_info["StandIn_SampleVideo"]["output"] == ["LATENT", "IMAGE"]
    assert tiny_models.TINY_ADAPTER in object_info["StandIn_LoadIdentityAdapter"]["input"]["required"]["adapter_name"][1]["options"]


def test_ui_workflows_hold_the_same_graph_as_their_api_twins(object_info):
    names = workflows.api_names()
    assert len(names) >= 3 and workflows.ui_names() == names
    for name in names:
        converted = workflows.ui_to_api(workflows.load_ui(name), object_info)
        assert workflows.with_defaults(converted, object_info) == workflows.with_defaults(workflows.load_api(name), object_info), name


def test_every_template_has_a_thumbnail_and_description_the_browser_can_show(server):
    """ComfyUI lists the pack's templates at /api/workflow_templates and the template browser
    shows /api/workflow_templates/<pack>/<name>.jpg on each card; the one-line description is
    in the workflow (extra.info) and in its Read-me note."""
    import io
    listed = server.get("/api/workflow_templates")
    (pack,) = [module for module, names in listed.items() if sorted(names) == workflows.ui_names()]
    # The browser's label for them (locales/<lang>/main.json), under the pack's registry name.
    served = server.get("/i18n")
    labels = {lang: served[lang]["templateWorkflows"]["category"][pack] for lang in ("en", "ja", "zh")}
    assert all(label.startswith("Stand-In") for label in labels.values()) and len(set(labels.values())) == 3, labels
    for name in workflows.ui_names():
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{pack}/{name}.jpg", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
            image = Image.open(io.BytesIO(r.read()))
        assert image.format == "JPEG" and image.size == (640, 480), name
        import numpy as np
        assert len(np.unique(np.asarray(image.convert("L").resize((32, 24))))) > 20, f"{name}.jpg is blank"
        ui = workflows.load_ui(name)
        description = ui["extra"]["info"]["description"]
        assert 20 < len(description) < 140 and name not in description, name
        notes = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
        assert len(notes) == 1 and notes[0]["widgets_values"][0].startswith(description), name


def test_shipped_api_workflows_are_accepted_as_shipped(server):
    """Placeholder files under the shipped model names let the server validate every graph
    against the real node definitions; each POST /prompt is accepted without node errors."""
    placeholders = []
    for name in workflows.api_names():
        prompt = workflows.load_api(name)
        for folder, filename in tiny_models.model_files(prompt).values():
            path = os.path.join(server.base_dir, "models", folder, filename)
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "wb").close()
                placeholders.append(path)
        for image in {n["inputs"]["image"] for n in prompt.values() if n["class_type"] == "LoadImage"}:
            shutil.copy(os.path.join(server.base_dir, "input", FACE), os.path.join(server.base_dir, "input", image))
    try:
        ids = [server.queue(workflows.load_api(name)) for name in workflows.api_names()]
        for prompt_id in ids:
            entry = server.wait(prompt_id, timeout=300)
            # The placeholders are empty, so the runs end at a loader; what matters is that
            # the graphs were accepted and the server survived them.
            assert entry["status"]["status_str"] in ("error", "success")
    finally:
        for path in placeholders:
            os.remove(path)
    assert server.get("/system_stats")


@pytest.mark.parametrize("name", workflows.api_names())
def test_example_workflow_runs_to_a_video_with_tiny_models(server, name):
    prompt = tiny(name, seed=3)
    # 5 frames; the long-video example 9, sampled in two context windows of 5.
    frames_expected = 9 if any(n["class_type"] == "WanContextWindowsManual" for n in prompt.values()) else 5
    entry = server.run(prompt, timeout=600)
    assert_success(server, entry)
    videos = [f for f in output_files(server, entry) if f.endswith((".mp4", ".webm", ".webp"))]
    assert videos, entry["outputs"]
    import av
    with av.open(videos[0]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == frames_expected and frames[0].shape == (64, 64, 3)
    previews = [f for f in output_files(server, entry) if f.endswith(".png")]
    assert previews, "the reference preview was not shown"
    assert Image.open(previews[0]).size == (512, 512)


def test_identity_changes_the_output(server):
    with_identity = tiny("standin_wan21_t2v_ksampler", seed=11, save_latent_prefix="e2e/with")
    without = tiny("standin_wan21_t2v_ksampler", seed=11, save_latent_prefix="e2e/without")
    without["13"]["inputs"]["model"] = ["10", 0]  # bypass Apply: the same sampler on the plain model
    a = read_latent(server, server.run(with_identity))
    b = read_latent(server, server.run(without))
    assert a.shape == b.shape
    assert (a - b).abs().max() > 1e-3


def test_back_to_back_references_match_runs_alone(server):
    def prompt(image, tag):
        return tiny("standin_wan21_t2v_sample_video", image=image, seed=5, save_latent_prefix=f"e2e/{tag}")

    server.free()
    ids = [server.queue(prompt(FACE, "queued_face")), server.queue(prompt(CAT, "queued_cat"))]
    queued = [read_latent(server, server.wait(i)) for i in ids]
    alone = []
    for image, tag in ((FACE, "alone_face"), (CAT, "alone_cat")):
        server.free()
        alone.append(read_latent(server, server.run(prompt(image, tag))))
    assert torch.equal(queued[0], alone[0])
    assert torch.equal(queued[1], alone[1])
    assert not torch.equal(alone[0], alone[1])


def test_interrupt_during_sample_video_then_the_next_prompt_runs(server):
    long = tiny("standin_wan21_t2v_sample_video", seed=9, steps=200)
    long["13"]["inputs"]["vae"] = None
    del long["13"]["inputs"]["vae"]
    long["20"]["inputs"]["images"] = ["13", 1]
    prompt_id, events = server.interrupt_when_running(long, node_id="13", after_progress=2)
    kinds = [e["type"] for e in events]
    assert "execution_interrupted" in kinds, kinds
    progress = [e["data"]["value"] for e in events if e["type"] == "progress" and e["data"].get("node") == "13"]
    assert progress and max(progress) < 200
    entry = server.run(tiny("standin_wan21_t2v_sample_video", seed=10))
    assert_success(server, entry)


# ------------------------------------------------------------------------------------
# Bad input through the API
# ------------------------------------------------------------------------------------

def test_missing_adapter_file_is_a_node_error_that_says_where_to_get_it(server):
    prompt = tiny("standin_wan21_t2v_ksampler")
    prompt["7"]["inputs"]["adapter_name"] = "Stand-In_wan2.1_T2V_14B.ckpt"
    with pytest.raises(PromptRejected) as err:
        server.queue(prompt)
    errors = err.value.body["node_errors"]["7"]["errors"]
    text = " ".join(e["details"] for e in errors)
    assert "Stand-In_wan2.1_T2V_14B.ckpt" in text and "huggingface.co/BowenXue/Stand-In" in text
    assert "download_weights.py" in text
    for bad in ("../../user/comfyui.db", "/etc/passwd"):
        prompt["7"]["inputs"]["adapter_name"] = bad
        with pytest.raises(PromptRejected) as err:
            server.queue(prompt)
        assert "refused" in err.value.body["node_errors"]["7"]["errors"][0]["details"]
    assert server.get("/system_stats")


def test_adapter_for_another_model_size_is_a_clear_execution_error(server):
    from wan_tiny import random_adapter_sd
    name = "standin_e2e_wrong_size.safetensors"
    safetensors.torch.save_file(random_adapter_sd(3, 128, rank=8), os.path.join(server.base_dir, "models", "standin", name))
    prompt = tiny("standin_wan21_t2v_ksampler")
    prompt["7"]["inputs"]["adapter_name"] = name
    node, message = error_message(server.run(prompt))
    assert node == "11"
    assert "made for a Wan model with 3 blocks of width 128" in message
    assert "connected model has 2 blocks of width 256" in message
    assert_success(server, server.run(tiny("standin_wan21_t2v_ksampler", seed=21)))


def test_identity_from_another_vae_is_a_clear_execution_error(server):
    prompt = tiny("standin_wan21_t2v_ksampler")
    prompt["50"] = {"class_type": "VAELoader", "inputs": {"vae_name": tiny_models.TINY_TAESD}}
    prompt["8"]["inputs"]["vae"] = ["50", 0]
    node, message = error_message(server.run(prompt))
    assert node == "8"
    assert "must be encoded with the Wan 2.1 VAE" in message and "TAESD" in message
    assert server.get("/system_stats")


def test_random_interrupts_free_and_unload_leave_later_prompts_exact(server):
    """/interrupt at random steps of Sample Video and of KSampler on a patched model, /free
    between prompts, models unloaded mid-queue: every later prompt still gives exactly what it
    gives run alone."""
    import random
    rng = random.Random(2024)
    checks = {"face": tiny("standin_wan21_t2v_ksampler", seed=31, save_latent_prefix="int/face"),
              "cat": tiny("standin_wan21_t2v_sample_video", image=CAT, seed=32, save_latent_prefix="int/cat")}
    expected = {}
    for key, prompt in checks.items():
        server.free()
        expected[key] = read_latent(server, server.run(prompt))

    seen = []
    for round_ in range(4):
        graph = ("standin_wan21_t2v_sample_video", "standin_wan21_t2v_ksampler")[round_ % 2]
        long = tiny(graph, image=(FACE, CAT)[round_ // 2], seed=50 + round_, steps=40)
        at = rng.randint(1, 30)
        _, events = server.interrupt_when_running(long, node_id="13", after_progress=at)
        kinds = [e["type"] for e in events]
        assert "execution_interrupted" in kinds, (graph, at, kinds)
        seen.append((graph.split("_")[-1], at))
        if round_ == 1:
            server.free()
        for key in ("cat", "face") if round_ % 2 else ("face", "cat"):
            assert torch.equal(read_latent(server, server.run(checks[key])), expected[key]), (round_, key)

    # Unload the models while a prompt runs; the next one must load them again and match.
    first = server.queue(checks["face"])
    server.post("/free", {"unload_models": True})
    second = server.queue(checks["cat"])
    assert torch.equal(read_latent(server, server.wait(first)), expected["face"])
    assert torch.equal(read_latent(server, server.wait(second)), expected["cat"])
    assert len(seen) == 4


def test_soak_criterion_catches_an_injected_leak(tmp_path):
    """The same soak with a test-only node keeping 8 MiB alive at every prompt: it must fail on
    RSS growth (and on nothing else)."""
    import subprocess
    import sys
    soak = os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak.py")
    proc = subprocess.run([sys.executable, soak, "24", "--window", "6", "--inject-leak-mb", "8", "--no-replay",
                           "--keep", str(tmp_path / "soak")], capture_output=True, text=True, timeout=3000)
    print(proc.stdout[-3000:])
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("soak: prompts=24 mismatches=0 "), proc.stdout[-3000:] + proc.stderr[-3000:]
    fields = dict(item.split("=") for item in last.split()[1:])
    assert proc.returncode == 1, last
    assert float(fields["rss_growth_mb_per_prompt"]) > 2.0 and float(fields["rss_slope_mb_per_prompt"]) > 2.0, last
    assert int(fields["live_tensors_growth"]) <= 0 and int(fields["held_after_free"]) == 0


def test_soak_forty_prompts(tmp_path):
    """tests/soak.py 40 against a server of its own: results equal the prompts run alone, no
    reference K/V outlives a prompt, memory and the pack's tensors do not grow."""
    import subprocess
    import sys
    soak = os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak.py")
    proc = subprocess.run([sys.executable, soak, "40", "--keep", str(tmp_path / "soak")],
                          capture_output=True, text=True, timeout=3000)
    last = proc.stdout.strip().splitlines()[-1]
    print(proc.stdout[-3000:])
    assert last.startswith("soak: prompts=40 mismatches=0 "), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:]
    fields = dict(item.split("=") for item in last.split()[1:])
    # RSS (single samples move by +-90 MB from prompt to prompt): fails only when both the growth
    # of the window minima per prompt and the Theil-Sen slope exceed 2 MB per prompt.
    assert not (float(fields["rss_growth_mb_per_prompt"]) > 2.0 and float(fields["rss_slope_mb_per_prompt"]) > 2.0)
    assert int(fields["live_tensors_growth"]) <= 0
    # Whatever ComfyUI's cache keeps (nothing with the classic cache; the last outputs with the
    # RAM-pressure cache), /free releases all of it.
    assert int(fields["held_after_free"]) == 0
