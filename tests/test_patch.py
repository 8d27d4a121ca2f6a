"""The Stand-In patch on ComfyUI's Wan model: isolation, caching, chaining, bad input."""

import copy
import gc
import os
import weakref

import pytest
import torch

import comfy.model_patcher
import comfy.patcher_extension
import comfy.supported_models

import wan_tiny
from wan_tiny import random_adapter_sd


@pytest.fixture
def builds(standin, monkeypatch):
    """Counts reference K/V builds and keeps weak references to what they produced."""
    record = {"count": 0, "grids": [], "refs": []}
    original = standin.StandInPatch.build

    def counting_build(self, dm, grid_hw, dtype, device, transformer_options):
        kv = original(self, dm, grid_hw, dtype, device, transformer_options)
        record["count"] += 1
        record["grids"].append(grid_hw)
        record["refs"] += [weakref.ref(t) for t in kv.keys + kv.values]
        return kv

    monkeypatch.setattr(standin.StandInPatch, "build", counting_build)
    return record


def other_reference(inputs):
    g = torch.Generator().manual_seed(7)
    return torch.randn(inputs["ip_latent"].shape, generator=g)


def test_original_model_is_untouched(base, inputs, adapter, standin):
    options_before = copy.deepcopy(base.model_options)
    wrappers_before = {k: dict(v) for k, v in base.wrappers.items()}
    before = wan_tiny.sample(base, inputs["context_pos"], inputs["context_neg"], seed=3)
    patched = standin.apply_standin(base, adapter, inputs["ip_latent"])
    with_identity = wan_tiny.sample(patched, inputs["context_pos"], inputs["context_neg"], seed=3)
    after = wan_tiny.sample(base, inputs["context_pos"], inputs["context_neg"], seed=3)
    assert torch.equal(before, after)
    assert (with_identity - before).abs().max() > 1e-2
    assert base.model_options == options_before
    assert {k: dict(v) for k, v in base.wrappers.items()} == wrappers_before
    assert "patches_replace" not in base.model_options.get("transformer_options", {})
    assert patched.model is base.model  # a clone shares weights, it does not copy them


def test_kv_built_once_per_generation_for_cond_uncond_and_any_batch(base, inputs, adapter, standin, builds):
    patched = standin.apply_standin(base, adapter, inputs["ip_latent"])
    for batch in (1, 3):
        builds["count"] = 0
        out = wan_tiny.sample(patched, inputs["context_pos"], inputs["context_neg"],
                              latent_shape=(batch, 16, 3, 12, 16), seed=11, steps=4, cfg=5.0)
        assert builds["count"] == 1, f"batch {batch}: {builds['count']} builds for 4 steps x cond/uncond"
        assert out.shape[0] == batch
    # Each row of the batch equals that row sampled alone: nothing is shared across rows
    # except the reference keys/values themselves.
    noise_latent = torch.zeros(3, 16, 3, 12, 16)
    batched = wan_tiny.sample(patched, inputs["context_pos"], inputs["context_neg"], latent=noise_latent, seed=5)
    import comfy.sample
    noise = comfy.sample.prepare_noise(noise_latent, 5)
    for row in range(3):
        alone = comfy.sample.sample(patched, noise[row:row + 1], 3, 4.0, "euler", "simple",
                                    wan_tiny.cond(inputs["context_pos"]), wan_tiny.cond(inputs["context_neg"]),
                                    noise_latent[row:row + 1], disable_pbar=True, seed=5)
        torch.testing.assert_close(batched[row:row + 1], alone, atol=2e-5, rtol=2e-5)


def test_cached_path_equals_recomputing_every_call(base, inputs, adapter, standin, builds):
    """Sampling with the cache gives what recomputing the reference at every call gives."""
    patched = standin.apply_standin(base, adapter, inputs["ip_latent"])
    cached = wan_tiny.sample(patched, inputs["context_pos"], inputs["context_neg"], seed=2, steps=3)
    assert builds["count"] == 1

    def no_run_cache(executor, *args, **kwargs):
        to = executor.class_obj.model_options["transformer_options"]
        to.pop(standin.RUN_KEY, None)
        return executor(*args, **kwargs)

    uncached = patched.clone()
    # An inner OUTER_SAMPLE wrapper that drops the run cache: every call rebuilds.
    uncached.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "zz_test", no_run_cache)
    recomputed = wan_tiny.sample(uncached, inputs["context_pos"], inputs["context_neg"], seed=2, steps=3)
    assert builds["count"] == 1 + 3  # one per model call (cond and uncond share a batch)
    torch.testing.assert_close(cached, recomputed, atol=1e-5, rtol=1e-5)


def test_new_reference_or_resolution_recomputes_and_nothing_survives(base, inputs, adapter, standin, builds):
    ref_a, ref_b = inputs["ip_latent"], other_reference(inputs)
    a = standin.apply_standin(base, adapter, ref_a)
    b = standin.apply_standin(base, adapter, ref_b)
    ctx_p, ctx_n = inputs["context_pos"], inputs["context_neg"]

    first_a = wan_tiny.sample(a, ctx_p, ctx_n, seed=4)
    then_b = wan_tiny.sample(b, ctx_p, ctx_n, seed=4)
    small_a = wan_tiny.sample(a, ctx_p, ctx_n, seed=4, latent_shape=(1, 16, 2, 8, 10))
    assert builds["count"] == 3
    assert builds["grids"] == [(6, 8), (6, 8), (4, 5)]
    gc.collect()
    assert all(r() is None for r in builds["refs"]), "reference K/V outlived their generation"

    # Each equals the same generation run first in a fresh patched clone.
    b_alone = wan_tiny.sample(standin.apply_standin(base, adapter, ref_b), ctx_p, ctx_n, seed=4)
    small_alone = wan_tiny.sample(standin.apply_standin(base, adapter, ref_a), ctx_p, ctx_n, seed=4,
                                  latent_shape=(1, 16, 2, 8, 10))
    assert torch.equal(then_b, b_alone)
    assert torch.equal(small_a, small_alone)
    assert (first_a - then_b).abs().max() > 1e-3  # the reference matters


def test_strength_zero_and_empty_window_are_the_plain_model(base, inputs, adapter, standin, builds):
    ctx_p, ctx_n = inputs["context_pos"], inputs["context_neg"]
    plain = wan_tiny.sample(base, ctx_p, ctx_n, seed=9)
    for kwargs in ({"strength": 0.0}, {"start_percent": 1.0, "end_percent": 1.0}):
        out = wan_tiny.sample(standin.apply_standin(base, adapter, inputs["ip_latent"], **kwargs), ctx_p, ctx_n, seed=9)
        assert torch.equal(out, plain), kwargs
    assert builds["count"] == 0
    half = wan_tiny.sample(standin.apply_standin(base, adapter, inputs["ip_latent"], start_percent=0.5), ctx_p, ctx_n, seed=9)
    full = wan_tiny.sample(standin.apply_standin(base, adapter, inputs["ip_latent"]), ctx_p, ctx_n, seed=9)
    assert not torch.equal(half, plain) and not torch.equal(half, full)


def test_strength_scales_attention_to_the_reference(base, inputs, adapter, standin):
    """Strength s adds log(s) to the logits of reference keys: s=1 is the official path,
    and the output moves monotonically away from the plain model as s grows."""
    ctx_p, ctx_n = inputs["context_pos"], inputs["context_neg"]
    plain = wan_tiny.sample(base, ctx_p, ctx_n, seed=9, steps=2)
    dist = []
    for s in (0.25, 1.0, 4.0):
        out = wan_tiny.sample(standin.apply_standin(base, adapter, inputs["ip_latent"], strength=s), ctx_p, ctx_n, seed=9, steps=2)
        dist.append(float((out - plain).norm()))
    assert dist[0] < dist[1] < dist[2]


def test_existing_block_replacement_is_chained(base, inputs, adapter, standin):
    calls = []

    class Spy:
        def __call__(self, args, extra):
            calls.append(args["img"].shape)
            return extra["original_block"](args)

    spied = base.clone()
    spied.set_model_patch_replace(Spy(), "dit", "double_block", 1)
    patched = standin.apply_standin(spied, adapter, inputs["ip_latent"])
    ctx_p, ctx_n = inputs["context_pos"], inputs["context_neg"]
    out = wan_tiny.sample(patched, ctx_p, ctx_n, seed=1, steps=2, cfg=1.0)
    assert len(calls) == 2  # the spy still runs at every step
    reference = wan_tiny.sample(standin.apply_standin(base, adapter, inputs["ip_latent"]), ctx_p, ctx_n, seed=1, steps=2, cfg=1.0)
    assert torch.equal(out, reference)  # and the block it wraps is Stand-In's


def test_applying_twice_replaces_the_identity(base, inputs, adapter, standin):
    ctx_p, ctx_n = inputs["context_pos"], inputs["context_neg"]
    twice = standin.apply_standin(standin.apply_standin(base, adapter, other_reference(inputs)), adapter, inputs["ip_latent"])
    once = standin.apply_standin(base, adapter, inputs["ip_latent"])
    replace = twice.model_options["transformer_options"]["patches_replace"]["dit"]
    assert all(p.prev is None for p in replace.values())
    assert torch.equal(wan_tiny.sample(twice, ctx_p, ctx_n, seed=8), wan_tiny.sample(once, ctx_p, ctx_n, seed=8))


def test_clones_after_apply_share_the_adapter_not_copy_it(base, inputs, adapter, standin):
    patched = standin.apply_standin(base, adapter, inputs["ip_latent"])
    again = patched.clone()
    p1 = patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)]
    p2 = again.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)]
    # The clone carries the same patch (no copy of the adapter or the reference), however
    # this ComfyUI copies model_options (a deepcopy before 0.14, shared leaves since) ...
    assert p1.patch is p2.patch and p2.patch.adapter is adapter
    # ... and patching the clone again leaves the first model's identity alone.
    ctx_p, ctx_n = inputs["context_pos"], inputs["context_neg"]
    before = wan_tiny.sample(patched, ctx_p, ctx_n, seed=4, steps=2)
    again.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", "double_block", 0)
    assert standin.apply_standin(again, adapter, other_reference(inputs)) is not again
    assert patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)] is p1
    assert standin.find_standin(patched) is p1.patch
    assert torch.equal(wan_tiny.sample(patched, ctx_p, ctx_n, seed=4, steps=2), before)


def test_vace_model_takes_the_identity(fixture_dir, inputs, adapter, standin):
    import safetensors.torch
    sd = safetensors.torch.load_file(os.path.join(fixture_dir, "model.safetensors"))
    vace = wan_tiny.load_state_dict_model(wan_tiny.vace_state_dict(sd))
    assert type(vace.model.diffusion_model).__name__ == "VaceWanModel"
    ctx_p, ctx_n = inputs["context_pos"], inputs["context_neg"]
    plain = wan_tiny.sample(vace, ctx_p, ctx_n, seed=6)
    patched = standin.apply_standin(vace, adapter, inputs["ip_latent"])
    assert (wan_tiny.sample(patched, ctx_p, ctx_n, seed=6) - plain).abs().max() > 1e-2
    off = standin.apply_standin(vace, adapter, inputs["ip_latent"], strength=0.0)
    assert torch.equal(wan_tiny.sample(off, ctx_p, ctx_n, seed=6), plain)


# ------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------

def test_adapter_for_another_model_size(base, inputs, adapter_mod, standin):
    wrong = adapter_mod.StandInAdapter.from_state_dict(random_adapter_sd(40, 5120 // 40, rank=8))
    with pytest.raises(standin.StandInError, match=r"made for a Wan model with 40 blocks of width 128, but the connected model has 2 blocks of width 256"):
        standin.apply_standin(base, wrong, inputs["ip_latent"])


def test_model_that_is_not_wan(inputs, adapter, standin):
    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64,
               hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=1,
               axes_dim=[8, 12, 12], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False)
    # Fields newer ComfyUI added to Flux (0.4.0: txt_ids_dims); their "none" values.
    import dataclasses
    import comfy.ldm.flux.model
    fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    cfg.update({k: v for k, v in {"txt_ids_dims": []}.items() if k in fields})
    mc = comfy.supported_models.Flux(cfg)
    mc.set_inference_dtype(torch.float32, None)
    flux = comfy.model_patcher.ModelPatcher(mc.get_model({}), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(standin.StandInError, match=r"needs a Wan 2.1 / 2.2 text-to-video model, but this MODEL is a Flux"):
        standin.apply_standin(flux, adapter, inputs["ip_latent"])


def test_image_to_video_wan_is_refused(fixture_dir, inputs, adapter, standin):
    import safetensors.torch
    sd = safetensors.torch.load_file(os.path.join(fixture_dir, "model.safetensors"))
    pe = sd["patch_embedding.weight"]
    sd["patch_embedding.weight"] = torch.cat([pe, torch.zeros(pe.shape[0], 20, *pe.shape[2:])], dim=1)
    i2v = wan_tiny.load_state_dict_model(sd)
    with pytest.raises(standin.StandInError, match=r"takes 36-channel latents"):
        standin.apply_standin(i2v, adapter, inputs["ip_latent"])


def test_reference_from_the_wrong_vae(base, adapter, standin):
    with pytest.raises(standin.StandInError, match=r"48 channels \(the Wan 2.2 5B VAE makes 48-channel latents\).*Wan 2.1 VAE"):
        standin.apply_standin(base, adapter, torch.randn(1, 48, 1, 8, 8))
    with pytest.raises(standin.StandInError, match=r"holds 2 images"):
        standin.apply_standin(base, adapter, torch.randn(2, 16, 1, 8, 8))
    with pytest.raises(standin.StandInError, match=r"NaN"):
        standin.apply_standin(base, adapter, torch.full((1, 16, 1, 8, 8), float("nan")))


def test_bad_window_and_strength(base, inputs, adapter, standin):
    with pytest.raises(standin.StandInError, match="start_percent"):
        standin.apply_standin(base, adapter, inputs["ip_latent"], start_percent=0.8, end_percent=0.2)
    with pytest.raises(standin.StandInError, match="strength"):
        standin.apply_standin(base, adapter, inputs["ip_latent"], strength=-1.0)


def test_attention_keywords_follow_the_comfyui_version(standin):
    import comfy.ldm.wan.model as wan_model

    def before_0_3_6x(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False):
        return q

    assert standin._takes_transformer_options(wan_model.optimized_attention)
    assert not standin._takes_transformer_options(before_0_3_6x)


def test_latent_sizes_off_the_patch_grid(base, inputs, adapter, standin, builds):
    """KSampler with a latent whose height and width are not multiples of the patch size (what
    EmptyHunyuanLatentVideo makes of a width not divisible by 16): ComfyUI pads, and the
    reference sits right after the padded grid."""
    patched = standin.apply_standin(base, adapter, inputs["ip_latent"])
    out = wan_tiny.sample(patched, inputs["context_pos"], inputs["context_neg"], latent_shape=(1, 16, 2, 9, 13), seed=3)
    assert out.shape == (1, 16, 2, 9, 13) and torch.isfinite(out).all()
    assert builds["grids"] == [(5, 7)]
