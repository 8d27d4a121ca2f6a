#!/usr/bin/env python3
"""Write the example workflows, each as an API prompt and as a UI (canvas) workflow.

    python tools/make_workflows.py --server http://127.0.0.1:8188 [--out example_workflows]

The graphs are defined once, here, in API form; the UI form is derived from the node
definitions the running server reports (/object_info), so widget order and socket types are
exactly what the frontend expects. Run it against a server that has this pack loaded
(tools/launch_comfyui.py) after changing a node's inputs, and commit the result.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

POSITIVE = ("A woman sits at a desk facing the camera in a softly lit study, talking warmly as if on a "
            "video call with friends; natural smile, calm gestures, photos and a world map on the wall "
            "behind her, realistic, detailed, cinematic lighting.")
# The negative prompt the official Stand-In inference uses (Wan's standard one).
NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
            "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
            "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")
REFERENCE_IMAGE = "reference_face.png"


def link(node, slot=0):
    return [str(node), slot]


def text_and_loaders(prompt):
    """Nodes shared by every example: text encoder, prompts, VAE, reference photo, identity."""
    prompt.update({
        "2": {"class_type": "CLIPLoader", "inputs": {
            "clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": link(2)}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": link(2)}},
        "5": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": REFERENCE_IMAGE}},
        "8": {"class_type": "StandIn_EncodeReferenceFace", "inputs": {
            "image": link(6), "vae": link(5), "detector": "auto", "white_background": True}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": link(8, 1)}},
    })


def save_video(prompt, images_from, prefix):
    prompt.update({
        "20": {"class_type": "CreateVideo", "inputs": {"images": images_from, "fps": 16.0}},
        # The labelled save: ComfyUI's video saving plus a signed C2PA manifest and an audit line;
        # the identity input lets the manifest name the reference and its consent record.
        "21": {"class_type": "StandIn_SaveLabelledVideo", "inputs": {
            "video": link(20), "filename_prefix": prefix, "format": "auto", "codec": "auto",
            "visible_mark": False, "identity": link(8)}},
    })


def identity_model(p, first_id: int, unet: str, adapter: str) -> list:
    """UNETLoader -> ModelSamplingSD3 (shift 5, as officially) -> Apply, with its adapter;
    node ids first_id (loader), +6 (adapter), +9 (shift), +10 (apply). Returns Apply's output."""
    loader, adapter_node, shift, apply_node = first_id, first_id + 6, first_id + 9, first_id + 10
    p.update({
        str(loader): {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        str(adapter_node): {"class_type": "StandIn_LoadIdentityAdapter", "inputs": {"adapter_name": adapter}},
        str(shift): {"class_type": "ModelSamplingSD3", "inputs": {"model": link(loader), "shift": 5.0}},
        str(apply_node): {"class_type": "StandIn_ApplyRSACPM", "inputs": {
            "model": link(shift), "adapter": link(adapter_node), "identity": link(8),
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
    })
    return link(apply_node)


def sample_video_node(model, **extra):
    return {"class_type": "StandIn_SampleVideo", "inputs": {
        "model": model, "positive": link(3), "negative": link(4), "width": 832, "height": 480,
        "length": 81, "batch_size": 1, "seed": 0, "steps": 20, "cfg": 5.0, "sampler_name": "euler",
        "scheduler": "simple", "denoise": 1.0, **extra, "vae": link(5)}}


def wan21_ksampler():
    p = {}
    text_and_loaders(p)
    model = identity_model(p, 1, "wan2.1_t2v_14B_fp16.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
    p.update({
        "12": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {
            "width": 832, "height": 480, "length": 81, "batch_size": 1}},
        "13": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 0, "steps": 20, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": link(3), "negative": link(4), "latent_image": link(12),
            "denoise": 1.0}},
        "14": {"class_type": "VAEDecode", "inputs": {"samples": link(13), "vae": link(5)}},
    })
    save_video(p, link(14), "standin/wan21_ksampler")
    return p


def wan21_sample_video():
    p = {}
    text_and_loaders(p)
    model = identity_model(p, 1, "wan2.1_t2v_14B_fp16.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
    p["13"] = sample_video_node(model)
    save_video(p, link(13, 1), "standin/wan21_sample_video")
    return p


def wan22_two_experts():
    p = {}
    text_and_loaders(p)
    high = identity_model(p, 1, "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "Stand-In_wan2.2_T2V_A14B_high.ckpt")
    low = identity_model(p, 31, "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "Stand-In_wan2.2_T2V_A14B_low.ckpt")
    p["13"] = sample_video_node(high, model_2=low, switch_boundary=0.875)
    save_video(p, link(13, 1), "standin/wan22_two_experts")
    return p


FACE_SWAP_VIDEO = "standin_face_swap_source.mp4"
FACE_SWAP_POSITIVE = ("A woman talks to the camera in a bright room, natural expressions and head movements, "
                      "realistic, detailed face, soft natural light.")


def wan21_face_swap():
    """Face swap as the official infer_face_swap.py: the source video with the reference pasted
    in, VAE-encoded, masked and re-noised at denoise 0.85 (20 steps, cfg 5, shift 5), then the
    background restored from the source frames."""
    p = {}
    text_and_loaders(p)
    p["3"]["inputs"]["text"] = FACE_SWAP_POSITIVE
    model = identity_model(p, 1, "wan2.1_t2v_14B_fp16.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
    p.update({
        "40": {"class_type": "LoadVideo", "inputs": {"file": FACE_SWAP_VIDEO}},
        "41": {"class_type": "GetVideoComponents", "inputs": {"video": link(40)}},
        "42": {"class_type": "StandIn_PrepareFaceSwapVideo", "inputs": {
            "images": link(41), "identity": link(8), "align": True, "dilation": 10, "feather": 21}},
        "43": {"class_type": "VAEEncode", "inputs": {"pixels": link(42), "vae": link(5)}},
        "44": {"class_type": "StandIn_FaceSwapLatentMask", "inputs": {
            "latent": link(43), "mask": link(42, 1), "threshold": 0.75}},
        "45": {"class_type": "StandIn_RestoreBackground", "inputs": {
            "images": link(13, 1), "source_images": link(41), "mask": link(42, 1), "dilation": 25,
            "feather": 51, "color_match": 0.75}},
    })
    p["13"] = sample_video_node(model, denoise=0.85, latent=link(44))
    save_video(p, link(45), "standin/wan21_face_swap")
    p["20"]["inputs"]["fps"] = link(41, 2)  # the source video's frame rate
    return p


WORKFLOWS = {
    "standin_wan21_t2v_ksampler": (wan21_ksampler, "Stand-In identity text-to-video, Wan 2.1 T2V 14B, ComfyUI's KSampler"),
    "standin_wan21_t2v_sample_video": (wan21_sample_video, "Stand-In identity text-to-video, Wan 2.1 T2V 14B, Sample Video"),
    "standin_wan22_a14b_two_experts": (wan22_two_experts, "Stand-In identity text-to-video, Wan 2.2 T2V A14B high + low noise experts"),
    "standin_wan21_face_swap": (wan21_face_swap, "Stand-In face swap, Wan 2.1 T2V 14B: source video, pasted reference, masked re-noising at denoise 0.85"),
}


def is_widget(spec) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def extra_widget_values(spec) -> list:
    """Values the frontend stores after a widget's own (seed control, image upload)."""
    opts = spec[1] if len(spec) > 1 else {}
    extra = []
    if opts.get("control_after_generate"):
        extra.append("fixed")
    if opts.get("image_upload"):
        extra.append("image")
    return extra


def ordered_inputs(info):
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            yield name, info["input"][section][name]


def api_to_ui(prompt: dict, object_info: dict, title: str) -> dict:
    ids = sorted(prompt, key=int)
    depth = {}

    def node_depth(nid):
        if nid not in depth:
            parents = [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((node_depth(p) for p in parents), default=-1)
        return depth[nid]

    for nid in ids:
        node_depth(nid)
    column_y = {}
    links, nodes = [], []
    out_links = {nid: {} for nid in ids}
    link_id = 0
    pending_inputs = {}
    for nid in ids:
        node = prompt[nid]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, spec in ordered_inputs(info):
            value = node["inputs"].get(name)
            if isinstance(value, list):
                link_id += 1
                src, slot = value
                src_type = object_info[prompt[src]["class_type"]]["output"][slot]
                links.append([link_id, int(src), slot, int(nid), len(inputs), src_type])
                out_links[src].setdefault(slot, []).append(link_id)
                entry = {"name": name, "type": spec[0] if not isinstance(spec[0], list) else "COMBO", "link": link_id}
                if is_widget(spec):
                    entry["widget"] = {"name": name}
                    widgets.append(None)
                    widgets.extend(extra_widget_values(spec))
                inputs.append(entry)
            elif is_widget(spec):
                widgets.append(value if value is not None else (spec[1] if len(spec) > 1 else {}).get("default"))
                widgets.extend(extra_widget_values(spec))
            else:
                inputs.append({"name": name, "type": spec[0], "link": None})
        pending_inputs[nid] = (inputs, widgets)
    order = sorted(ids, key=lambda n: (depth[n], int(n)))
    for index, nid in enumerate(order):
        node = prompt[nid]
        info = object_info[node["class_type"]]
        inputs, widgets = pending_inputs[nid]
        outputs = []
        for slot, (otype, oname) in enumerate(zip(info["output"], info["output_name"])):
            outputs.append({"name": oname, "type": otype, "links": out_links[nid].get(slot, []),
                            "slot_index": slot})
        height = 60 + 26 * (len(inputs) + len(widgets) + len(outputs))
        x = 40 + 440 * depth[nid]
        y = column_y.get(depth[nid], 40)
        column_y[depth[nid]] = y + height + 40
        nodes.append({
            "id": int(nid), "type": node["class_type"], "pos": [x, y], "size": [400, height],
            "flags": {}, "order": index, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        })
    nodes.sort(key=lambda n: n["id"])
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-standin/" + title)),
        "revision": 0, "last_node_id": max(int(i) for i in ids), "last_link_id": link_id,
        "nodes": nodes, "links": links, "groups": [], "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}, "info": {"title": title}},
        "version": 0.4,
    }


def fetch_object_info(server: str) -> dict:
    with urllib.request.urlopen(server.rstrip("/") + "/object_info", timeout=60) as r:
        return json.load(r)


def with_widget_defaults(prompt: dict, object_info: dict) -> dict:
    """Spell out every widget value, as the canvas does when it queues a workflow, so that the
    API prompt and the UI workflow hold exactly the same graph."""
    for node in prompt.values():
        for name, spec in ordered_inputs(object_info[node["class_type"]]):
            if name not in node["inputs"] and is_widget(spec):
                opts = spec[1] if len(spec) > 1 else {}
                if "default" in opts:
                    node["inputs"][name] = opts["default"]
                elif isinstance(spec[0], list) and spec[0]:
                    node["inputs"][name] = spec[0][0]
    return prompt


def write(out_dir: str, object_info: dict, only=None) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, (make, title) in WORKFLOWS.items():
        if only and name not in only:
            continue
        prompt = with_widget_defaults(make(), object_info)
        prompt = {k: prompt[k] for k in sorted(prompt, key=int)}
        # API twins live in a subfolder: ComfyUI offers every top-level .json as a canvas template.
        os.makedirs(os.path.join(out_dir, "api"), exist_ok=True)
        api_path = os.path.join(out_dir, "api", f"{name}.json")
        ui_path = os.path.join(out_dir, f"{name}.json")
        with open(api_path, "w", encoding="utf-8") as f:
            json.dump(prompt, f, indent=2, ensure_ascii=False)
            f.write("\n")
        with open(ui_path, "w", encoding="utf-8") as f:
            json.dump(api_to_ui(prompt, object_info, title), f, indent=2, ensure_ascii=False)
            f.write("\n")
        written += [api_path, ui_path]
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--out", default=os.path.join(ROOT, "example_workflows"))
    parser.add_argument("--only", action="append", choices=sorted(WORKFLOWS),
                        help="write only this workflow (repeatable); default all")
    args = parser.parse_args(argv)
    for path in write(args.out, fetch_object_info(args.server), only=args.only):
        print(path)


if __name__ == "__main__":
    main()
