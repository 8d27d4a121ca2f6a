#!/usr/bin/env python3
"""Tiny random-weight models in ComfyUI's real file formats, for the demo and the tests.

    python dev/tiny_models.py MODELS_DIR

writes into MODELS_DIR (a ComfyUI models folder):
  diffusion_models/standin_tiny_wan21_t2v.safetensors   Wan 2.1 T2V DiT, dim 256, 2 blocks (original Wan keys)
  standin/standin_tiny_adapter.safetensors              Stand-In adapter for it (official key names)
  vae/standin_tiny_wan21_vae.safetensors                Wan 2.1 VAE, width 1 (16-channel latents)
  vae/standin_tiny_taesd.safetensors                    a TAESD VAE (4-channel latents): the "wrong VAE"
  diffusion_models/standin_tiny_wan21_vace.safetensors  Wan 2.1 VACE DiT of the same size, 1 VACE block
  loras/standin_tiny_wan_lora.safetensors               a LoRA for both (ComfyUI key names, rank 4)
They produce noise-like videos: they exist to run the real graph end to end, not to make art.
Weights are seeded, so every run writes the same files.
"""

from __future__ import annotations

import copy
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TINY_DIT = "standin_tiny_wan21_t2v.safetensors"
TINY_ADAPTER = "standin_tiny_adapter.safetensors"
TINY_VAE = "standin_tiny_wan21_vae.safetensors"
TINY_TAESD = "standin_tiny_taesd.safetensors"
TINY_VACE_DIT = "standin_tiny_wan21_vace.safetensors"
TINY_LORA = "standin_tiny_wan_lora.safetensors"
DIT_DIM, DIT_LAYERS = 256, 2


def _init_like(name, shape, g):
    import torch
    if name.endswith("modulation"):
        return 0.5 * torch.randn(shape, generator=g)
    if ".norm" in name and name.endswith(".weight") and len(shape) == 1:
        # RMSNorm / affine norm3 weights: around 1, varied, as in the parity fixture.
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    if name.endswith(".bias"):
        return 0.02 * torch.randn(shape, generator=g)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return torch.randn(shape, generator=g) / math.sqrt(fan_in)


def tiny_wan_dit_state_dict(seed=1234, dim=DIT_DIM, layers=DIT_LAYERS):
    import torch
    import comfy.ldm.wan.model
    import comfy.ops
    model = comfy.ldm.wan.model.WanModel(
        model_type="t2v", dim=dim, ffn_dim=2 * dim, num_heads=dim // 128, num_layers=layers,
        in_dim=16, out_dim=16, text_dim=4096, freq_dim=256, device="meta",
        operations=comfy.ops.manual_cast)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, param in model.state_dict().items():
        value = _init_like(name, tuple(param.shape), g)
        if name.endswith("self_attn.norm_q.weight") or name.endswith("self_attn.norm_k.weight"):
            value = value * 2.5  # sharper self-attention, so the reference visibly matters
        sd[name] = value.contiguous()
    return sd


def tiny_vace_dit_state_dict(seed=4321, dim=DIT_DIM, layers=DIT_LAYERS):
    """Wan 2.1 VACE: the T2V blocks plus one VACE block and the control patch embedding
    (96 input channels: 2 x 16 latent channels of the control video and 64 of its mask)."""
    import torch
    import comfy.ldm.wan.model
    import comfy.ops
    model = comfy.ldm.wan.model.VaceWanModel(
        dim=dim, ffn_dim=2 * dim, num_heads=dim // 128, num_layers=layers, in_dim=16, out_dim=16,
        text_dim=4096, freq_dim=256, vace_layers=1, vace_in_dim=96, device="meta",
        operations=comfy.ops.manual_cast)
    g = torch.Generator().manual_seed(seed)
    return {name: _init_like(name, tuple(param.shape), g).contiguous() for name, param in model.state_dict().items()}


def tiny_lora_state_dict(seed=17, dim=DIT_DIM, layers=DIT_LAYERS, rank=4):
    """A LoRA on the attention and FFN projections of every block, in the key format ComfyUI
    loads for Wan (diffusion_model.<module>.lora_down/up + alpha)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for b in range(layers):
        for module in ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o"):
            key = f"diffusion_model.blocks.{b}.{module}"
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, dim, generator=g) / math.sqrt(dim)
            sd[f"{key}.lora_up.weight"] = torch.randn(dim, rank, generator=g) * 0.5 / math.sqrt(rank)
            sd[f"{key}.alpha"] = torch.tensor(float(rank))
    return sd


def tiny_adapter_state_dict(seed=99, dim=DIT_DIM, layers=DIT_LAYERS, rank=32):
    import torch
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for b in range(layers):
        for p in "qkv":
            sd[f"blocks.{b}.self_attn.{p}_loras.down.weight"] = torch.randn(rank, dim, generator=g) / math.sqrt(dim)
            sd[f"blocks.{b}.self_attn.{p}_loras.up.weight"] = torch.randn(dim, rank, generator=g) / math.sqrt(rank)
    return sd


def tiny_wan_vae_state_dict(seed=7, dim=1):
    import torch
    import comfy.ldm.wan.vae
    vae = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                   attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, param in vae.state_dict().items():
        if name.endswith("gamma"):
            sd[name] = torch.ones(param.shape)
        else:
            sd[name] = _init_like(name, tuple(param.shape), g) * 0.5
    return sd


def tiny_taesd_state_dict(seed=5):
    import torch
    import comfy.taesd.taesd
    model = comfy.taesd.taesd.TAESD()
    g = torch.Generator().manual_seed(seed)
    return {name: (p.clone() if p.ndim == 0 else _init_like(name, tuple(p.shape), g) * 0.5)
            for name, p in model.state_dict().items()}


def write_all(models_dir: str) -> dict:
    import safetensors.torch
    targets = {
        ("diffusion_models", TINY_DIT): tiny_wan_dit_state_dict,
        ("standin", TINY_ADAPTER): tiny_adapter_state_dict,
        ("vae", TINY_VAE): tiny_wan_vae_state_dict,
        ("vae", TINY_TAESD): tiny_taesd_state_dict,
        ("diffusion_models", TINY_VACE_DIT): tiny_vace_dit_state_dict,
        ("loras", TINY_LORA): tiny_lora_state_dict,
    }
    written = {}
    for (folder, name), make in targets.items():
        path = os.path.join(models_dir, folder, name)
        data = safetensors.torch.save(make())
        # Rewritten only when the recipe changed, so a server that has the file open is not
        # disturbed by a second call.
        if not os.path.isfile(path) or os.path.getsize(path) != len(data) or open(path, "rb").read() != data:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        written[name] = path
    return written


def model_files(prompt: dict) -> dict:
    """(folder, file name) of every model file a prompt names."""
    keys = {"UNETLoader": ("unet_name", "diffusion_models"), "VAELoader": ("vae_name", "vae"),
            "CLIPLoader": ("clip_name", "text_encoders"),
            "StandIn_LoadIdentityAdapter": ("adapter_name", "standin"),
            "LoraLoaderModelOnly": ("lora_name", "loras")}
    files = {}
    for nid, node in prompt.items():
        if node["class_type"] in keys:
            key, folder = keys[node["class_type"]]
            files[nid] = (folder, node["inputs"][key])
    return files


def tiny_variant(prompt: dict, *, dit: str, adapter: str, vae: str, image: str, width=64, height=64,
                 length=5, steps=2, seed=None, save_latent_prefix=None) -> dict:
    """The same graph with tiny models, the test conditioning node instead of umT5, a small
    video, and (optionally) a SaveLatent node on the sampled latent so results can be compared.
    A context-window graph gets twice the length less one and windows of `length` frames
    overlapping by one latent frame, so that it really samples in two windows."""
    p = copy.deepcopy(prompt)
    windows = any(node["class_type"] == "WanContextWindowsManual" for node in p.values())
    for nid, node in list(p.items()):
        ct, inp = node["class_type"], node["inputs"]
        if ct == "UNETLoader":
            inp["unet_name"] = TINY_VACE_DIT if "vace" in inp["unet_name"] else dit
        elif ct == "LoraLoaderModelOnly":
            inp["lora_name"] = TINY_LORA
        elif ct == "WanContextWindowsManual":
            inp.update({"context_length": length, "context_overlap": 4})  # 1 latent frame
        elif ct == "StandIn_LoadIdentityAdapter":
            inp["adapter_name"] = adapter
        elif ct == "VAELoader":
            inp["vae_name"] = vae
        elif ct == "LoadImage":
            inp["image"] = image
        elif ct == "CLIPTextEncode":
            p[nid] = {"class_type": "StandInTest_TextToConditioning", "inputs": {"text": inp["text"], "tokens": 8}}
        elif ct in ("EmptyHunyuanLatentVideo", "StandIn_SampleVideo", "WanVaceToVideo"):
            inp.update({"width": width, "height": height, "length": 2 * length - 1 if windows else length})
        if ct in ("KSampler", "StandIn_SampleVideo"):
            inp["steps"] = steps
            if seed is not None:
                inp["seed"] = seed
        elif ct == "KSamplerAdvanced" and seed is not None and inp.get("add_noise") == "enable":
            inp["noise_seed"] = seed  # its step split (0-2 of 4, 2-4) is kept: 4 tiny steps
    for nid in [n for n, node in p.items() if node["class_type"] == "CLIPLoader"]:
        del p[nid]
    if save_latent_prefix is not None:
        samplers = [n for n, node in p.items() if node["class_type"] in ("KSampler", "KSamplerAdvanced", "StandIn_SampleVideo")]
        sampler = max(samplers, key=lambda n: p[n]["inputs"].get("start_at_step", 0))  # the last to run
        p["90"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0], "filename_prefix": save_latent_prefix}}
    return p


def main(argv=None):
    import argparse
    import comfyhost
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models_dir")
    args = parser.parse_args(argv)
    comfyhost.setup_comfy(cpu=True)
    for name, path in write_all(os.path.abspath(args.models_dir)).items():
        print(f"{name}: {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
