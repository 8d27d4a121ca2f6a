#!/usr/bin/env python3
"""make demo: real ComfyUI with this pack, an example workflow through the API queue, a video out.

    python dev/demo.py [--workflow standin_wan21_t2v_sample_video] [--out out/standin_demo.mp4]

Starts ComfyUI (GPU when torch sees one, else CPU) on a private base directory (.demo/), copies
a reference photo into its input folder, queues the example workflow with POST /prompt, follows
it over the websocket, and copies the video it saved to --out. The workflow saves through Save
Labelled Video: the demo checks that the video's C2PA manifest reads back as AI-generated and
valid (tools/verify_provenance.py) and that the audit log has the prompt's line.

Weights: if COMFYUI_DIR names a ComfyUI whose models folder holds every file the workflow
needs (see weights_manifest.json), those real weights are used (read in place through
extra_model_paths). Otherwise the demo says so and uses tiny random-weight models in
ComfyUI's real formats, with a test-only node standing in for the umT5 text encoder: the
graph is the real one, the video is noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))  # verify_provenance, a user command

import tiny_models  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

MODEL_FOLDERS = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip"),
                 "vae": ("vae",), "standin": ("standin",)}


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def load_workflow(name: str) -> dict:
    with open(os.path.join(ROOT, "example_workflows", "api", f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def real_models_dir(prompt: dict) -> str | None:
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        return None
    models = os.path.join(os.path.abspath(os.path.expanduser(comfy_dir)), "models")
    missing = []
    for folder, filename in tiny_models.model_files(prompt).values():
        if not any(os.path.isfile(os.path.join(models, sub, filename)) for sub in MODEL_FOLDERS[folder]):
            missing.append(f"{folder}/{filename}")
    if missing:
        say(f"COMFYUI_DIR has no {', '.join(missing)}; falling back to tiny models "
            f"(tools/download_weights.py --workflow ... fetches the real ones).")
        return None
    return models


def reference_photo(path: str) -> None:
    from PIL import Image
    from skimage import data
    # NASA portrait of astronaut Eileen Collins (public domain), shipped inside scikit-image.
    Image.fromarray(data.astronaut()).save(path)


def progress_printer(prompt: dict):
    """Prints which node runs and the sampling steps, from the prompt's websocket events."""
    last = {"node": None}

    async def on_event(event, session):
        data = event.get("data", {})
        if event["type"] == "executing" and data.get("node") and data["node"] != last["node"]:
            last["node"] = data["node"]
            say(f"running node {data['node']} ({prompt[data['node']]['class_type']})")
        elif event["type"] == "progress":
            end = "" if sys.stdout.isatty() and data["value"] < data["max"] else "\n"
            print(f"\r[demo]   step {data['value']}/{data['max']}", end=end, flush=True)

    return on_event


def check_provenance(video: str, prompt_id: str, base: str) -> bool:
    """The video came through Save Labelled Video: its C2PA manifest must read back as
    AI-generated and valid, and the audit log must hold the prompt's line."""
    import verify_provenance
    provenance = verify_provenance.load_provenance()
    report = provenance.verify(video)
    if not report.ok or not report.ai_generated:
        say(f"the saved video has no valid AI-generated C2PA manifest: {json.dumps(report.summary())[:2000]}")
        return False
    say(f"C2PA manifest {report.label}: valid, unmodified, digitalSourceType trainedAlgorithmicMedia, "
        f"{'self-signed installation key' if report.self_signed else 'your certificate'}; "
        f"models: {', '.join(m['name'] for m in report.generation.get('models', []))}")
    audit_dir = os.path.join(base, "user", "__standin", "audit")
    spec_path = os.path.join(ROOT, "engine", "provenance", "audit.py")
    import importlib.util
    spec = importlib.util.spec_from_file_location("standin_audit", spec_path)
    audit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(audit)
    entries, _ = audit.read(audit.AuditLog(audit_dir).files()) if os.path.isdir(audit_dir) else ([], 0)
    mine = [e for e in entries if e.get("prompt_id") == prompt_id]
    if not mine:
        say(f"no audit line for prompt {prompt_id} in {audit_dir}")
        return False
    say(f"audit line for prompt {prompt_id} in {os.path.join(audit_dir, audit.LOG_NAME)} "
        f"(output sha256 {mine[-1]['outputs'][0]['sha256'][:16]}...)")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflow", default="standin_wan21_t2v_sample_video")
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "standin_demo.mp4"))
    parser.add_argument("--base-directory", default=os.path.join(ROOT, ".demo"))
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    prompt = load_workflow(args.workflow)
    base = os.path.abspath(args.base_directory)
    os.makedirs(os.path.join(base, "input"), exist_ok=True)
    image_name = next(n["inputs"]["image"] for n in prompt.values() if n["class_type"] == "LoadImage")
    reference_photo(os.path.join(base, "input", image_name))

    models = real_models_dir(prompt)
    extra_args = []
    if models:
        say(f"using the real weights in {models}")
        yaml_path = os.path.join(base, "extra_model_paths.yaml")
        with open(yaml_path, "w", encoding="utf-8") as f:
            f.write("user_models:\n    base_path: " + json.dumps(models) + "\n"
                    + "".join(f"    {folder}: |\n" + "".join(f"        {sub}\n" for sub in subs)
                              for folder, subs in MODEL_FOLDERS.items()))
        extra_args = ["--extra-model-paths-config", yaml_path]
        test_nodes = False
    else:
        say("no real Wan / Stand-In weights found (set COMFYUI_DIR to a ComfyUI with them): using TINY "
            "RANDOM-WEIGHT models in ComfyUI's real formats and a test node instead of umT5. "
            "The graph is real; the video will be noise.")
        import comfyhost
        comfyhost.setup_comfy(cpu=True)  # to build the tiny models in ComfyUI's own classes
        written = tiny_models.write_all(os.path.join(base, "models"))
        prompt = tiny_models.tiny_variant(prompt, dit=tiny_models.TINY_DIT, adapter=tiny_models.TINY_ADAPTER,
                                          vae=tiny_models.TINY_VAE, image=image_name, width=256, height=256,
                                          length=17, steps=8)
        say("tiny models: " + ", ".join(os.path.basename(p) for p in written.values()))
        test_nodes = True

    server = ComfyServer(base, port=args.port, test_nodes=test_nodes, extra_args=extra_args)
    say(f"starting ComfyUI on {server.url} (log: {server.log_path})")
    started = time.time()
    server.start()
    try:
        say(f"ComfyUI ready in {time.time() - started:.1f} s")
        say("queueing the workflow (POST /prompt), following it over the websocket")
        prompt_id, final = asyncio.run(server.follow(prompt, progress_printer(prompt)))
        if final["type"] != "execution_success":
            say(f"the workflow ended with {final['type']}: {json.dumps(final.get('data'))[:2000]}")
            return 1
        entry = server.wait(prompt_id)
        videos = []
        for node_out in entry["outputs"].values():
            for items in node_out.values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and str(item.get("filename", "")).endswith((".mp4", ".webm")):
                        videos.append(os.path.join(base, item.get("type", "output"), item.get("subfolder", ""), item["filename"]))
        if not videos:
            say(f"the workflow finished but saved no video: {json.dumps(entry['outputs'])[:1000]}")
            return 1
        if not check_provenance(videos[0], prompt_id, base):
            return 1
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        shutil.copyfile(videos[0], args.out)
        say(f"done in {time.time() - started:.1f} s: {args.out} ({os.path.getsize(args.out)} bytes)"
            + ("" if models else " -- tiny random weights, so expect noise"))
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
