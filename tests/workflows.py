"""Example workflows as the tests use them: reading, UI-to-API conversion, tiny variants."""

from __future__ import annotations

import copy
import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKFLOW_DIR = os.path.join(ROOT, "example_workflows")

SCALAR_WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def api_names() -> list[str]:
    return sorted(os.path.basename(p)[: -len(".api.json")] for p in glob.glob(os.path.join(WORKFLOW_DIR, "*.api.json")))


def load_api(name: str) -> dict:
    with open(os.path.join(WORKFLOW_DIR, f"{name}.api.json"), encoding="utf-8") as f:
        return json.load(f)


def load_ui(name: str) -> dict:
    with open(os.path.join(WORKFLOW_DIR, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """What the canvas queues for a UI workflow: links become [node, slot], widget values are
    read in the node definition's input order (seed control and upload widgets skipped)."""
    links = {l[0]: l for l in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) in (2, 4):  # muted / bypassed nodes are not queued
            continue
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values", []))
        inputs = {}
        order = info.get("input_order", {})
        for section in ("required", "optional"):
            for name in order.get(section, []):
                spec = info["input"][section][name]
                opts = spec[1] if len(spec) > 1 else {}
                widget = (isinstance(spec[0], list) or spec[0] in SCALAR_WIDGETS) and not opts.get("forceInput")
                if widget:
                    value = values.pop(0)
                    if opts.get("control_after_generate"):
                        values.pop(0)
                    if opts.get("image_upload"):
                        values.pop(0)
                    if name not in linked:
                        inputs[name] = value
                if name in linked:
                    l = linked[name]
                    inputs[name] = [str(l[1]), l[2]]
        if values:
            raise AssertionError(f"node {node['id']} ({node['type']}) has {len(values)} widget values left over: {values}")
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def model_files(prompt: dict) -> dict:
    """(folder, file name) of every model file a prompt names."""
    keys = {"UNETLoader": ("unet_name", "diffusion_models"), "VAELoader": ("vae_name", "vae"),
            "CLIPLoader": ("clip_name", "text_encoders"),
            "StandIn_LoadIdentityAdapter": ("adapter_name", "standin")}
    files = {}
    for nid, node in prompt.items():
        if node["class_type"] in keys:
            key, folder = keys[node["class_type"]]
            files[nid] = (folder, node["inputs"][key])
    return files


def tiny_variant(prompt: dict, *, dit: str, adapter: str, vae: str, image: str, width=64, height=64,
                 length=5, steps=2, seed=None, save_latent_prefix=None) -> dict:
    """The same graph with tiny models, the test conditioning node instead of umT5, a small
    video, and (optionally) a SaveLatent node on the sampled latent so results can be compared."""
    p = copy.deepcopy(prompt)
    for nid, node in list(p.items()):
        ct, inp = node["class_type"], node["inputs"]
        if ct == "UNETLoader":
            inp["unet_name"] = dit
        elif ct == "StandIn_LoadIdentityAdapter":
            inp["adapter_name"] = adapter
        elif ct == "VAELoader":
            inp["vae_name"] = vae
        elif ct == "LoadImage":
            inp["image"] = image
        elif ct == "CLIPTextEncode":
            p[nid] = {"class_type": "StandInTest_TextToConditioning", "inputs": {"text": inp["text"], "tokens": 8}}
        elif ct in ("EmptyHunyuanLatentVideo", "StandIn_SampleVideo"):
            inp.update({"width": width, "height": height, "length": length})
        if ct in ("KSampler", "StandIn_SampleVideo"):
            inp["steps"] = steps
            if seed is not None:
                inp["seed"] = seed
    for nid in [n for n, node in p.items() if node["class_type"] == "CLIPLoader"]:
        del p[nid]
    if save_latent_prefix is not None:
        sampler = next(n for n, node in p.items() if node["class_type"] in ("KSampler", "StandIn_SampleVideo"))
        p["90"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0], "filename_prefix": save_latent_prefix}}
    return p
