#!/usr/bin/env python3
"""Write the example workflows, each as an API prompt and as a UI (canvas) workflow.

    python dev/make_workflows.py --server http://127.0.0.1:8188 [--out example_workflows]

The graphs are defined once, here, in API form; the UI form is derived from the node
definitions the running server reports (/object_info), so widget order and socket types are
exactly what the frontend expects. Run it against a server that has this pack loaded
(dev/launch_comfyui.py) after changing a node's inputs, and commit the result.
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


def identity_model(p, first_id: int, unet: str, adapter: str, lora=None) -> list:
    """UNETLoader [-> LoraLoaderModelOnly] -> ModelSamplingSD3 (shift 5, as officially) -> Apply,
    with its adapter; node ids first_id (loader), +6 (adapter), +9 (shift), +10 (apply), +50
    (LoRA, when lora=(file, strength)). Returns Apply's output."""
    loader, adapter_node, shift, apply_node = first_id, first_id + 6, first_id + 9, first_id + 10
    model = link(loader)
    if lora is not None:
        p[str(first_id + 50)] = {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": model, "lora_name": lora[0], "strength_model": lora[1]}}
        model = link(first_id + 50)
    p.update({
        str(loader): {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        str(adapter_node): {"class_type": "StandIn_LoadIdentityAdapter", "inputs": {"adapter_name": adapter}},
        str(shift): {"class_type": "ModelSamplingSD3", "inputs": {"model": model, "shift": 5.0}},
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


WAN21_T2V = "wan2.1_t2v_14B_fp16.safetensors"
WAN21_ADAPTER = "Stand-In_wan2.1_T2V_14B.ckpt"
WAN22_HIGH, WAN22_LOW = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
WAN22_ADAPTERS = "Stand-In_wan2.2_T2V_A14B_high.ckpt", "Stand-In_wan2.2_T2V_A14B_low.ckpt"
WAN21_VACE = "wan2.1_vace_14B_fp16.safetensors"
LIGHTX2V_21 = "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors"
LIGHTX2V_22 = ("wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
               "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors")
STYLE_LORA = "studio_ghibli_wan14b_t2v_v01.safetensors"
POSE_VIDEO = "standin_pose_control.mp4"


def ksampler(model, latent, steps=20, cfg=5.0, positive=None, negative=None):
    return {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 0, "steps": steps, "cfg": cfg, "sampler_name": "euler",
        "scheduler": "simple", "positive": positive or link(3), "negative": negative or link(4),
        "latent_image": latent, "denoise": 1.0}}


def t2v_with_ksampler(p, model, prefix, length=81, steps=20, cfg=5.0):
    p.update({
        "12": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {
            "width": 832, "height": 480, "length": length, "batch_size": 1}},
        "13": ksampler(model, link(12), steps=steps, cfg=cfg),
        "14": {"class_type": "VAEDecode", "inputs": {"samples": link(13), "vae": link(5)}},
    })
    save_video(p, link(14), prefix)
    return p


def wan21_ksampler():
    p = {}
    text_and_loaders(p)
    return t2v_with_ksampler(p, identity_model(p, 1, WAN21_T2V, WAN21_ADAPTER), "standin/wan21_ksampler")


def wan21_sample_video():
    p = {}
    text_and_loaders(p)
    model = identity_model(p, 1, WAN21_T2V, WAN21_ADAPTER)
    p["13"] = sample_video_node(model)
    save_video(p, link(13, 1), "standin/wan21_sample_video")
    return p


def wan22_two_experts():
    p = {}
    text_and_loaders(p)
    high = identity_model(p, 1, WAN22_HIGH, WAN22_ADAPTERS[0])
    low = identity_model(p, 31, WAN22_LOW, WAN22_ADAPTERS[1])
    p["13"] = sample_video_node(high, model_2=low, switch_boundary=0.875)
    save_video(p, link(13, 1), "standin/wan22_two_experts")
    return p


def wan21_distill():
    """lightx2v's step- and CFG-distilled LoRA: 4 steps at cfg 1 (euler, simple, shift 5, as
    ComfyUI's own lightx2v templates), Stand-In applied after the LoRA."""
    p = {}
    text_and_loaders(p)
    model = identity_model(p, 1, WAN21_T2V, WAN21_ADAPTER, lora=(LIGHTX2V_21, 1.0))
    return t2v_with_ksampler(p, model, "standin/wan21_distill_4step", steps=4, cfg=1.0)


def wan22_distill():
    """Wan 2.2 A14B with the lightx2v 4-step LoRAs, as ComfyUI's Wan 2.2 template runs it: two
    KSamplerAdvanced, the high-noise expert for steps 0-2, the low-noise expert for 2-4, cfg 1;
    each expert with its own Stand-In adapter."""
    p = {}
    text_and_loaders(p)
    high = identity_model(p, 1, WAN22_HIGH, WAN22_ADAPTERS[0], lora=(LIGHTX2V_22[0], 1.0))
    low = identity_model(p, 31, WAN22_LOW, WAN22_ADAPTERS[1], lora=(LIGHTX2V_22[1], 1.0))

    def advanced(model, latent, add_noise, start, end, leftover):
        return {"class_type": "KSamplerAdvanced", "inputs": {
            "model": model, "add_noise": add_noise, "noise_seed": 0, "steps": 4, "cfg": 1.0,
            "sampler_name": "euler", "scheduler": "simple", "positive": link(3), "negative": link(4),
            "latent_image": latent, "start_at_step": start, "end_at_step": end,
            "return_with_leftover_noise": leftover}}

    p.update({
        "12": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {
            "width": 832, "height": 480, "length": 81, "batch_size": 1}},
        "13": advanced(high, link(12), "enable", 0, 2, "enable"),
        "16": advanced(low, link(13), "disable", 2, 10000, "disable"),
        "14": {"class_type": "VAEDecode", "inputs": {"samples": link(16), "vae": link(5)}},
    })
    save_video(p, link(14), "standin/wan22_distill_4step")
    return p


STYLE_POSITIVE = "Studio Ghibli style. " + POSITIVE


def wan21_style_lora():
    """A community style LoRA with Stand-In, as the official infer_with_lora.py (LoRA scale 1,
    20 steps, cfg 5); the prompt starts with the LoRA's trigger words."""
    p = {}
    text_and_loaders(p)
    p["3"]["inputs"]["text"] = STYLE_POSITIVE
    model = identity_model(p, 1, WAN21_T2V, WAN21_ADAPTER, lora=(STYLE_LORA, 1.0))
    return t2v_with_ksampler(p, model, "standin/wan21_style_lora")


VACE_POSITIVE = ("A woman raises both hands and dances in a bright studio, facing the camera, natural smile, "
                 "realistic, detailed, soft light.")


def wan21_vace_pose():
    """Stand-In with Wan 2.1 VACE 14B and a pose (or depth) control video, as the official
    infer_with_vace.py: the Wan 2.1 T2V 14B adapter on the VACE model; VACE strength 0.5 with a
    control video alone (the official README; 0.8 when a reference image is also given)."""
    p = {}
    text_and_loaders(p)
    p["3"]["inputs"]["text"] = VACE_POSITIVE
    model = identity_model(p, 1, WAN21_VACE, WAN21_ADAPTER)
    p.update({
        "40": {"class_type": "LoadVideo", "inputs": {"file": POSE_VIDEO}},
        "41": {"class_type": "GetVideoComponents", "inputs": {"video": link(40)}},
        "46": {"class_type": "WanVaceToVideo", "inputs": {
            "positive": link(3), "negative": link(4), "vae": link(5), "width": 832, "height": 480,
            "length": 81, "batch_size": 1, "strength": 0.5, "control_video": link(41)}},
        "13": ksampler(model, link(46, 2), positive=link(46, 0), negative=link(46, 1)),
        "47": {"class_type": "TrimVideoLatent", "inputs": {"samples": link(13), "trim_amount": link(46, 3)}},
        "14": {"class_type": "VAEDecode", "inputs": {"samples": link(47), "vae": link(5)}},
    })
    save_video(p, link(14), "standin/wan21_vace_pose")
    p["20"]["inputs"]["fps"] = link(41, 2)  # the control video's frame rate: motion keeps its speed
    return p


def wan21_long_video():
    """A video longer than Wan's 81 frames through ComfyUI's context windows: 161 frames sampled
    in overlapping 81-frame windows (overlap 30); the reference K/V are built once for all windows."""
    p = {}
    text_and_loaders(p)
    model = identity_model(p, 1, WAN21_T2V, WAN21_ADAPTER)
    p["15"] = {"class_type": "WanContextWindowsManual", "inputs": {
        "model": model, "context_length": 81, "context_overlap": 30,
        # Inputs newer ComfyUI (0.2x+) requires of an API prompt, at the defaults its canvas
        # gives them; older ComfyUI ignores inputs a node does not declare.
        "freenoise": True, "retain_first_frame": False, "split_conds_to_windows": False}}
    return t2v_with_ksampler(p, link(15), "standin/wan21_long_video", length=161)


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
    model = identity_model(p, 1, WAN21_T2V, WAN21_ADAPTER)
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


# In the style of the official infer_multi.py ("a man and a woman stand facing the camera, taking
# a graduation photo; autumn leaves slowly fall in the background").
TWO_PEOPLE_POSITIVE = ("A man and a woman stand side by side facing the camera, posing for their graduation "
                       "photo, both smiling; autumn leaves drift slowly down in the background, realistic, "
                       "detailed, natural light.")
REFERENCE_IMAGE_2 = "reference_face_2.png"


def wan21_two_people():
    """Two people in one video (the official dev/multi zero-shot baseline), each kept to their
    half of the frame: person 1's photo on the left, person 2's on the right."""
    p = {}
    text_and_loaders(p)
    p["3"]["inputs"]["text"] = TWO_PEOPLE_POSITIVE
    p.update({
        "60": {"class_type": "LoadImage", "inputs": {"image": REFERENCE_IMAGE_2}},
        "61": {"class_type": "StandIn_EncodeReferenceFace", "inputs": {
            "image": link(60), "vae": link(5), "detector": "auto", "white_background": True}},
        "62": {"class_type": "PreviewImage", "inputs": {"images": link(61, 1)}},
        "63": {"class_type": "StandIn_AddIdentity", "inputs": {
            "identity": link(8), "layout": "left half", "strength": 1.0}},
        "64": {"class_type": "StandIn_AddIdentity", "inputs": {
            "identity": link(61), "layout": "right half", "strength": 1.0, "identities": link(63)}},
    })
    model = identity_model(p, 1, WAN21_T2V, WAN21_ADAPTER)
    p["11"]["inputs"]["identity"] = link(64)
    t2v_with_ksampler(p, model, "standin/wan21_two_people")
    p["21"]["inputs"]["identity"] = link(64)  # the manifest names both references and consents
    return p


# name: (graph, title, one-line description)
WORKFLOWS = {
    "standin_wan21_t2v_ksampler": (
        wan21_ksampler, "Stand-In identity text-to-video, Wan 2.1 T2V 14B, ComfyUI's KSampler",
        "A video of the person in your photo from a text prompt: Wan 2.1 T2V 14B, 20 steps, with ComfyUI's own KSampler."),
    "standin_wan21_t2v_sample_video": (
        wan21_sample_video, "Stand-In identity text-to-video, Wan 2.1 T2V 14B, Sample Video",
        "The same identity text-to-video in one node: Stand-In's Sample Video makes the latent, samples and decodes."),
    "standin_wan22_a14b_two_experts": (
        wan22_two_experts, "Stand-In identity text-to-video, Wan 2.2 T2V A14B high + low noise experts",
        "Wan 2.2 A14B: the high-noise and the low-noise expert, each with its own Stand-In adapter, 20 steps."),
    "standin_wan21_distill_4step": (
        wan21_distill, "Stand-In identity text-to-video, Wan 2.1 T2V 14B, lightx2v 4-step distill LoRA",
        "Fast identity video: Wan 2.1 14B with the lightx2v distill LoRA, 4 steps at cfg 1 (about 5x fewer model calls)."),
    "standin_wan22_a14b_distill_4step": (
        wan22_distill, "Stand-In identity text-to-video, Wan 2.2 T2V A14B, lightx2v 4-step distill LoRAs",
        "Fast Wan 2.2 A14B: lightx2v 4-step LoRAs on both experts, two KSamplerAdvanced (steps 0-2, 2-4), cfg 1."),
    "standin_wan21_style_lora": (
        wan21_style_lora, "Stand-In identity text-to-video with a style LoRA, Wan 2.1 T2V 14B",
        "The person in a style: a community Wan 2.1 14B style LoRA (Studio Ghibli, as the official README suggests) with Stand-In."),
    "standin_wan21_vace_pose": (
        wan21_vace_pose, "Stand-In identity with VACE pose or depth control, Wan 2.1 VACE 14B",
        "The person moves as a pose or depth video shows: Wan 2.1 VACE 14B with the control video, VACE strength 0.5."),
    "standin_wan21_long_video": (
        wan21_long_video, "Stand-In identity long video through context windows, Wan 2.1 T2V 14B",
        "Longer than 81 frames: 161 frames (10 s) in overlapping 81-frame context windows, one identity throughout."),
    "standin_wan21_face_swap": (
        wan21_face_swap, "Stand-In face swap, Wan 2.1 T2V 14B: source video, pasted reference, masked re-noising at denoise 0.85",
        "Swap the face in your video for the person in your photo: masked re-noising at denoise 0.85, background kept."),
    "standin_wan21_two_people": (
        wan21_two_people, "Stand-In two people in one video, Wan 2.1 T2V 14B, each kept to their half of the frame",
        "Two people, one photo each: person 1 on the left, person 2 on the right (zero-shot, as the official multi-person baseline)."),
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
        # A new seed after every Run: a second Run gives a new video (the queued prompt keeps the
        # seed it ran with, so /history and the labelled file still say which one).
        extra.append("randomize")
    if opts.get("image_upload"):
        extra.append("image")
    return extra


def ordered_inputs(info):
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            yield name, info["input"][section][name]


# --- The canvas form: layout, titles, groups, a note, models metadata, the opening view -------

MODELS = ("UNETLoader", "LoraLoaderModelOnly", "StandIn_LoadIdentityAdapter", "CLIPLoader", "VAELoader")
GROUPS = [  # (title, colour, node classes in the order they are stacked)
    ("Models", "#3f789e", MODELS),
    ("Reference photo", "#8A8", ("LoadImage", "StandIn_EncodeReferenceFace", "PreviewImage")),
    ("Person 1 (left half)", "#8A8", ("LoadImage", "StandIn_EncodeReferenceFace", "PreviewImage")),
    ("Person 2 (right half)", "#8A8", ("LoadImage", "StandIn_EncodeReferenceFace", "PreviewImage")),
    ("Prompt", "#b58b2a", ("CLIPTextEncode",)),
    ("Identity on the model", "#a1309b", ("ModelSamplingSD3", "StandIn_AddIdentity", "StandIn_ApplyRSACPM",
                                          "WanContextWindowsManual")),
    ("High-noise expert", "#3f789e", ()),
    ("Low-noise expert", "#3f789e", ()),
    ("Control video", "#88A", ("LoadVideo", "GetVideoComponents", "StandIn_PrepareFaceSwapVideo", "VAEEncode",
                               "StandIn_FaceSwapLatentMask", "WanVaceToVideo")),
    ("Sample and decode", "#b06634", ("EmptyHunyuanLatentVideo", "KSampler", "KSamplerAdvanced", "StandIn_SampleVideo",
                                      "TrimVideoLatent", "VAEDecode", "StandIn_RestoreBackground")),
    ("Save (labelled video)", "#444", ("CreateVideo", "StandIn_SaveLabelledVideo")),
]
# Columns left to right: each holds these groups, top to bottom (the Wan 2.2 templates give a
# column to each expert, so their prompt goes under the shared models).
COLUMNS = [("Models",), ("Reference photo",), ("Person 1 (left half)",), ("Person 2 (right half)",),
           ("Prompt", "Identity on the model"), ("Control video",),
           ("Sample and decode",), ("Save (labelled video)",)]
EXPERT_COLUMNS = [("Models", "Prompt"), ("Reference photo",), ("High-noise expert",), ("Low-noise expert",),
                  ("Sample and decode",), ("Save (labelled video)",)]
EXPERT_CHAIN = {"High-noise expert": (1, 51, 7, 10, 11), "Low-noise expert": (31, 81, 37, 40, 41)}
# The two-people template: each person's photo nodes in their own column.
PERSON_GROUPS = {"Person 1 (left half)": (6, 8, 9), "Person 2 (right half)": (60, 61, 62)}
PERSON_TITLES = {"6": "Person 1: photo (one face)", "60": "Person 2: photo (one face)",
                 "9": "Person 1: prepared reference", "62": "Person 2: prepared reference",
                 "63": "Person 1: left half", "64": "Person 2: right half"}
EXPERT_ORDER = ("UNETLoader", "LoraLoaderModelOnly", "StandIn_LoadIdentityAdapter", "ModelSamplingSD3", "StandIn_ApplyRSACPM")

FILE_TITLES = {
    WAN21_T2V: "Wan 2.1 T2V 14B", WAN21_VACE: "Wan 2.1 VACE 14B",
    WAN22_HIGH: "Wan 2.2 T2V A14B, high-noise expert", WAN22_LOW: "Wan 2.2 T2V A14B, low-noise expert",
    LIGHTX2V_21: "lightx2v 4-step distill LoRA", LIGHTX2V_22[0]: "lightx2v 4-step LoRA, high noise",
    LIGHTX2V_22[1]: "lightx2v 4-step LoRA, low noise", STYLE_LORA: "Style LoRA (Studio Ghibli)",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "umT5 text encoder", "wan_2.1_vae.safetensors": "Wan 2.1 VAE",
}
FILE_INPUT = {"UNETLoader": "unet_name", "LoraLoaderModelOnly": "lora_name", "CLIPLoader": "clip_name",
              "VAELoader": "vae_name", "StandIn_LoadIdentityAdapter": "adapter_name"}
TITLES = {"LoadImage": "Reference photo (one face)", "PreviewImage": "Prepared reference (check the crop)",
          "EmptyHunyuanLatentVideo": "Video size and length (4n+1 frames)", "ModelSamplingSD3": "Shift 5"}
# Height a node gains after a run (measured on the canvas by tests/test_frontend.py): image and
# video previews, the ~260 px text box of a warning shown as progress text, widgets newer ComfyUI adds.
GROWTH = {"LoadImage": 300, "PreviewImage": 320, "LoadVideo": 340, "StandIn_SaveLabelledVideo": 360,
          "StandIn_EncodeReferenceFace": 270, "StandIn_PrepareFaceSwapVideo": 270, "StandIn_LoadIdentityAdapter": 270,
          "WanContextWindowsManual": 90}  # 0.2x+: freenoise, retain_first_frame, split_conds_to_windows
NODE_W, TITLE_H, GAP, GROUP_HEAD, PAD, COL_GAP, NOTE_H = 360, 30, 24, 46, 20, 40, 330


def node_title(nid: str, node: dict, name: str) -> str | None:
    ct, inputs = node["class_type"], node["inputs"]
    if "two_people" in name and nid in PERSON_TITLES:
        return PERSON_TITLES[nid]
    if ct in FILE_INPUT and ct != "StandIn_LoadIdentityAdapter":
        return FILE_TITLES.get(inputs.get(FILE_INPUT[ct]))
    if ct == "CLIPTextEncode":
        return "Prompt" if nid == "3" else "Negative prompt"
    if ct == "LoadVideo":
        return "Source video (the face to replace)" if "face_swap" in name else "Pose or depth control video"
    if ct == "KSamplerAdvanced":
        return ("High-noise expert, steps 0-2" if inputs.get("add_noise") == "enable"
                else "Low-noise expert, steps 2-4")
    return TITLES.get(ct)


def group_of(nid: str, node: dict, prompt: dict) -> str:
    if "61" in prompt:
        for group, members in PERSON_GROUPS.items():
            if int(nid) in members:
                return group
    if "31" in prompt:
        for group, chain in EXPERT_CHAIN.items():
            if int(nid) in chain:
                return group
    for title, _, classes in GROUPS:
        if node["class_type"] in classes:
            return title
    raise ValueError(f"node {nid} ({node['class_type']}) has no group")


def stacking_key(nid: str, node: dict, group: str):
    order = EXPERT_ORDER if group in EXPERT_CHAIN else next(c for t, _, c in GROUPS if t == group)
    return order.index(node["class_type"]), int(nid)


def manifest_models() -> dict:
    with open(os.path.join(ROOT, "weights_manifest.json"), encoding="utf-8") as f:
        return {e["name"]: e for e in json.load(f)["files"]}


def models_property(node: dict, manifest: dict) -> list:
    """The `models` list ComfyUI's own templates put on a loader: the frontend's missing-models
    dialog offers these downloads when the file is not in that folder."""
    key = FILE_INPUT.get(node["class_type"])
    if key is None:
        return []
    entry = manifest[node["inputs"][key]]
    return [{"name": entry["name"], "url": entry["url"], "directory": entry["folder"]}]


def note_text(name: str, prompt: dict, manifest: dict, description: str) -> str:
    """The Read-me note (Markdown): what the template does, which files go where, what to do."""
    files = []
    for node in sorted(prompt.values(), key=lambda n: MODELS.index(n["class_type"]) if n["class_type"] in MODELS else 99):
        key = FILE_INPUT.get(node["class_type"])
        if key:
            entry = manifest[node["inputs"][key]]
            line = f"- `{entry['folder']}/` {entry['name']}"
            if line not in files:
                files.append(line)
    videos = any(n["class_type"] == "LoadVideo" for n in prompt.values())
    several = any(n["class_type"] == "StandIn_AddIdentity" for n in prompt.values())
    photo = ("**2. Two photos**, one per person, each face clearly visible; the previews show the crops Stand-In "
             "sees. Each Add Identity keeps its person to a half of the frame: describe both people in the prompt "
             "(left to right). Zero-shot: the adapter was trained on one person, so likeness is weaker than with "
             "one person and can fail; try other seeds." if several else
             "**2. Reference photo**: one person, face clearly visible; the preview shows the crop Stand-In sees.")
    lines = [description, "",
             "**1. Models** in `ComfyUI/models/` (Download buttons of the missing-models dialog, or "
             f"`python custom_nodes/comfyui-standin/tools/download_weights.py --workflow custom_nodes/comfyui-standin/example_workflows/{name}.json`):",
             *files, "",
             photo, ""]
    if videos:
        video = next(n["inputs"]["file"] for n in prompt.values() if n["class_type"] == "LoadVideo")
        where = f"`{video}` in `ComfyUI/input/`, or pick yours in Load Video"
        lines.append(
            f"**3. Control video** ({where}): a pose or depth video, made from real footage by a DWPose or "
            "depth preprocessor; its first 81 frames are used, at its own frame rate."
            if "vace" in name else
            f"**3. Source video** ({where}): one person, face visible; cropped to multiples of 16 and "
            "trimmed to 4n+1 frames.")
        lines.append("")
    lines.append(f"**{4 if videos else 3}. Prompt**, then **Run**. The video lands in `output/standin/`, "
                 "labelled as AI-generated (C2PA).")
    return "\n".join(lines)


def node_height(ct: str, n_inputs: int, n_widgets: int, n_outputs: int, big_text: bool) -> int:
    """LiteGraph's own layout (20 px a slot row, 24 a widget) with some room to spare."""
    height = 16 + 20 * max(n_inputs, n_outputs) + 24 * n_widgets + 10
    if big_text:
        height = max(height, 180)
    return height + GROWTH.get(ct, 0)


def api_to_ui(prompt: dict, object_info: dict, title: str, name: str = "", description: str = "") -> dict:
    ids = sorted(prompt, key=int)
    manifest = manifest_models()
    links, out_links, link_id, built = [], {nid: {} for nid in ids}, 0, {}
    for nid in ids:
        node = prompt[nid]
        info = object_info[node["class_type"]]
        inputs, widgets, big_text = [], [], False
        for input_name, spec in ordered_inputs(info):
            value = node["inputs"].get(input_name)
            if isinstance(value, list):
                link_id += 1
                src, slot = value
                src_type = object_info[prompt[src]["class_type"]]["output"][slot]
                links.append([link_id, int(src), slot, int(nid), len(inputs), src_type])
                out_links[src].setdefault(slot, []).append(link_id)
                entry = {"name": input_name, "type": spec[0] if not isinstance(spec[0], list) else "COMBO", "link": link_id}
                if is_widget(spec):
                    entry["widget"] = {"name": input_name}
                    widgets.append(None)
                    widgets.extend(extra_widget_values(spec))
                inputs.append(entry)
            elif is_widget(spec):
                widgets.append(value if value is not None else (spec[1] if len(spec) > 1 else {}).get("default"))
                widgets.extend(extra_widget_values(spec))
                big_text = big_text or bool(len(spec) > 1 and spec[1].get("multiline"))
            else:
                inputs.append({"name": input_name, "type": spec[0], "link": None})
        built[nid] = (inputs, widgets, big_text)

    # Groups in columns; nodes stacked in each group with room for their titles and previews.
    members = {}
    for nid in ids:
        members.setdefault(group_of(nid, prompt[nid], prompt), []).append(nid)
    nodes, groups, x = [], [], 40
    note_id = max(int(i) for i in ids) + 1
    note = note_text(name, prompt, manifest, description)
    colours = {t: c for t, c, _ in GROUPS}
    columns = EXPERT_COLUMNS if "31" in prompt else COLUMNS
    for column in columns:
        present = [g for g in column if g in members]
        if not present:
            continue
        y = 40
        if column == columns[0]:
            nodes.append({"id": note_id, "type": "MarkdownNote", "pos": [x, y + TITLE_H], "size": [NODE_W, NOTE_H],
                          "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [],
                          "title": "Read me first", "properties": {}, "widgets_values": [note],
                          "color": "#432", "bgcolor": "#653"})
            y += TITLE_H + NOTE_H + 2 * GAP
        for group in present:
            top = y
            y += GROUP_HEAD
            for nid in sorted(members[group], key=lambda n: stacking_key(n, prompt[n], group)):
                node = prompt[nid]
                info = object_info[node["class_type"]]
                inputs, widgets, big_text = built[nid]
                outputs = [{"name": oname, "type": otype, "links": out_links[nid].get(slot, []), "slot_index": slot}
                           for slot, (otype, oname) in enumerate(zip(info["output"], info["output_name"]))]
                height = node_height(node["class_type"], len(inputs), len(widgets), len(outputs), big_text)
                properties = {"Node name for S&R": node["class_type"]}
                models = models_property(node, manifest)
                if models:
                    properties["models"] = models
                ui_node = {"id": int(nid), "type": node["class_type"], "pos": [x, y + TITLE_H],
                           "size": [NODE_W, height], "flags": {}, "order": 0, "mode": 0, "inputs": inputs,
                           "outputs": outputs, "properties": properties, "widgets_values": widgets}
                node_name = node_title(nid, node, name)
                if node_name:
                    ui_node["title"] = node_name
                nodes.append(ui_node)
                y += TITLE_H + height + GAP
            groups.append({"id": len(groups) + 1, "title": group, "bounding": [x - PAD, top, NODE_W + 2 * PAD, y - top],
                           "color": colours[group], "font_size": 24, "flags": {}})
            y += 2 * GAP
        x += NODE_W + 2 * PAD + COL_GAP
    # Execution order as the canvas saves it: parents first.
    depth = {}

    def node_depth(nid):
        if nid not in depth:
            parents = [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((node_depth(p) for p in parents), default=-1)
        return depth[nid]

    rank = {int(nid): i for i, nid in enumerate(sorted(ids, key=lambda n: (node_depth(n), int(n))))}
    for node in nodes:
        node["order"] = rank.get(node["id"], len(rank))
    nodes.sort(key=lambda n: n["id"])
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-standin/" + title)),
        "revision": 0, "last_node_id": note_id, "last_link_id": link_id,
        "nodes": nodes, "links": links, "groups": groups, "config": {},
        "extra": {"ds": opening_view(nodes, groups), "info": {"title": title, "description": description}},
        "version": 0.4,
    }


# The canvas the view is fitted to: a 1920x1080 window less the frontend's side bar, its top bars
# (tabs, workflow name, Run) and a margin; never below scale 0.6, where the canvas still draws text.
VIEW_W, VIEW_H, SIDEBAR_W, MENU_H, MARGIN, MIN_SCALE = 1920, 1080, 64, 140, 20, 0.6


def opening_view(nodes: list, groups: list) -> dict:
    """extra.ds such that the whole graph is on screen when the workflow opens, clear of the
    side bar: LiteGraph draws canvas point p at (p + offset) * scale."""
    boxes = [g["bounding"] for g in groups] + [[n["pos"][0], n["pos"][1] - TITLE_H, n["size"][0], n["size"][1] + TITLE_H]
                                               for n in nodes]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    scale = min((VIEW_W - SIDEBAR_W - 2 * MARGIN) / (x1 - x0), (VIEW_H - MENU_H - 2 * MARGIN) / (y1 - y0), 1.0)
    if scale < MIN_SCALE:
        raise ValueError(f"the graph ({x1 - x0} x {y1 - y0}) does not fit a 1920x1080 window at scale {MIN_SCALE}")
    scale = round(scale, 4)
    return {"scale": scale, "offset": [round((SIDEBAR_W + MARGIN) / scale - x0, 2), round((MENU_H + MARGIN) / scale - y0, 2)]}


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
                elif spec[0] == "COMBO" and opts.get("options"):  # V3 combo: the canvas takes the first
                    node["inputs"][name] = opts["options"][0]
    return prompt


def write(out_dir: str, object_info: dict, only=None) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, (make, title, description) in WORKFLOWS.items():
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
            json.dump(api_to_ui(prompt, object_info, title, name, description), f, indent=2, ensure_ascii=False)
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
