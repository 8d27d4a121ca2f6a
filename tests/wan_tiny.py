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


def random_wan_t2v_state_dict(dim, ffn_dim, num_layers, dtype=torch.float32, device="cpu", seed=0,
                              in_dim=16, out_dim=16, text_dim=4096, freq_dim=256):
    """A Wan 2.1 T2V DiT with random weights under the original key names (no prefix), which
    ComfyUI's loader detects as it detects the released checkpoints.

    Weights are N(0, 1/fan_in), biases 0, norm weights 1: activations stay O(1) through any
    number of blocks, so no variant is timed on overflowing or denormal numbers.
    """
    g = torch.Generator(device=device).manual_seed(seed)

    def weight(*shape, fan_in):
        t = torch.randn(shape, generator=g, device=device, dtype=torch.float32)
        return t.mul_(fan_in ** -0.5).to(dtype)

    def zeros(*shape):
        return torch.zeros(shape, device=device, dtype=dtype)

    def ones(*shape):
        return torch.ones(shape, device=device, dtype=dtype)

    def linear(name, n_out, n_in):
        sd[f"{name}.weight"] = weight(n_out, n_in, fan_in=n_in)
        sd[f"{name}.bias"] = zeros(n_out)

    sd = {}
    sd["patch_embedding.weight"] = weight(dim, in_dim, 1, 2, 2, fan_in=in_dim * 4)
    sd["patch_embedding.bias"] = zeros(dim)
    linear("text_embedding.0", dim, text_dim)
    linear("text_embedding.2", dim, dim)
    linear("time_embedding.0", dim, freq_dim)
    linear("time_embedding.2", dim, dim)
    linear("time_projection.1", 6 * dim, dim)
    for i in range(num_layers):
        p = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                linear(f"{p}{attn}.{proj}", dim, dim)
            sd[f"{p}{attn}.norm_q.weight"] = ones(dim)
            sd[f"{p}{attn}.norm_k.weight"] = ones(dim)
        sd[f"{p}norm3.weight"] = ones(dim)
        sd[f"{p}norm3.bias"] = zeros(dim)
        linear(f"{p}ffn.0", ffn_dim, dim)
        linear(f"{p}ffn.2", dim, ffn_dim)
        sd[f"{p}modulation"] = weight(1, 6, dim, fan_in=dim)
    linear("head.head", out_dim * 4, dim)
    sd["head.modulation"] = weight(1, 2, dim, fan_in=dim)
    return sd
