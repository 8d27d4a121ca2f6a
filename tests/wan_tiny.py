"""Tiny Wan models and inputs in ComfyUI's real formats, for the tests."""

from __future__ import annotations

import os

import torch
import safetensors.torch

import comfy.model_management
import comfy.sample
import comfy.sd
import comfy.utils


def load_model(path, dtype=torch.float32):
    return comfy.sd.load_diffusion_model(path, model_options={"dtype": dtype})


def load_state_dict_model(sd, dtype=torch.float32):
    model = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype})
    assert model is not None, "ComfyUI did not recognise the test model"
    return model


def fixture_inputs(folder):
    return safetensors.torch.load_file(os.path.join(folder, "inputs.safetensors"))


def random_adapter_sd(num_blocks, dim, rank=128, seed=0, scale=0.05, prefix=""):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for b in range(num_blocks):
        for p in "qkv":
            sd[f"{prefix}blocks.{b}.self_attn.{p}_loras.down.weight"] = torch.randn(rank, dim, generator=g) * scale
            sd[f"{prefix}blocks.{b}.self_attn.{p}_loras.up.weight"] = torch.randn(dim, rank, generator=g) * scale
    return sd


def vace_state_dict(base_sd, vace_layers=1, vace_in_dim=96, seed=0):
    """The fixture DiT plus VACE blocks, as ComfyUI's VACE checkpoints name them."""
    g = torch.Generator().manual_seed(seed)
    sd = dict(base_sd)
    dim = base_sd["head.modulation"].shape[-1]
    block0 = {k[len("blocks.0."):]: v for k, v in base_sd.items() if k.startswith("blocks.0.")}
    for i in range(vace_layers):
        for name, value in block0.items():
            sd[f"vace_blocks.{i}.{name}"] = value.clone() + 0.01 * torch.randn(value.shape, generator=g)
        sd[f"vace_blocks.{i}.after_proj.weight"] = 0.05 * torch.randn(dim, dim, generator=g)
        sd[f"vace_blocks.{i}.after_proj.bias"] = torch.zeros(dim)
    sd["vace_blocks.0.before_proj.weight"] = 0.05 * torch.randn(dim, dim, generator=g)
    sd["vace_blocks.0.before_proj.bias"] = torch.zeros(dim)
    pe = base_sd["patch_embedding.weight"]
    sd["vace_patch_embedding.weight"] = 0.05 * torch.randn(pe.shape[0], vace_in_dim, *pe.shape[2:], generator=g)
    sd["vace_patch_embedding.bias"] = torch.zeros(pe.shape[0])
    return sd


def cond(context):
    return [[context, {}]]


def sample(model, context_pos, context_neg, latent_shape=(1, 16, 3, 12, 16), seed=0, steps=3, cfg=4.0,
           sampler="euler", scheduler="simple", latent=None, denoise=1.0):
    """Plain ComfyUI sampling, as KSampler does it."""
    latent = torch.zeros(latent_shape) if latent is None else latent
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, cond(context_pos),
                               cond(context_neg), latent, denoise=denoise, disable_pbar=True, seed=seed)
