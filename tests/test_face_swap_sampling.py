"""Face swap at the latent level: ComfyUI's masked sampling (Face Swap Latent Mask + Sample Video)
is the official force_background_consistency, step for step; the official latent mask; and how
close ComfyUI's denoise comes to the official start sigma and schedule.

The official loop (pipelines/wan_video_face_swap.py, schedulers/flow_match.py in WeChatCV/Stand-In)
is written here as a ComfyUI sampler run *without* a noise mask, on the same model, conditioning,
noise and sigmas, so the only difference between the two runs is who keeps the background.
"""

import math

import numpy as np
import pytest
import torch

import comfy.sample
import comfy.samplers
import comfy.sd
import comfy.utils
import nodes as comfy_nodes
from comfy_extras import nodes_model_advanced

import conftest
import face_swap_video
import tiny_models

STEPS, CFG, SEED, DENOISE = 6, 5.0, 23, 0.85


@pytest.fixture(autouse=True)
def as_comfyui_runs_nodes():
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from skimage import data
    written = tiny_models.write_all(str(tmp_path_factory.mktemp("models")))
    mods = {name.rsplit(".", 1)[-1]: conftest.pack_module(name) for name in
            ("nodes.encode_reference", "nodes.apply_identity", "nodes.sample_video", "engine.identity.adapter",
             "nodes.prepare_face_swap", "nodes.face_swap_latent_mask", "nodes.restore_background", "nodes.sockets",
             "nodes.load_adapter")}
    mods["load_adapter"].register_model_folder()
    base = comfy.sd.load_diffusion_model(written[tiny_models.TINY_DIT], model_options={"dtype": torch.float32})
    model = nodes_model_advanced.ModelSamplingSD3().patch(base, 5.0)[0]  # shift 5, as officially
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(written[tiny_models.TINY_VAE]))
    adapter_obj = mods["adapter"].load_adapter_file(written[tiny_models.TINY_ADAPTER])
    adapter = mods["sockets"].IdentityAdapter(name=tiny_models.TINY_ADAPTER, adapter=adapter_obj, patcher=None)
    photo = torch.from_numpy(data.astronaut().astype(np.float32) / 255.0).unsqueeze(0)
    identity = mods["encode_reference"].EncodeReferenceFace.execute(photo, vae).args[0]
    patched = mods["apply_identity"].ApplyRSACPM.execute(model, adapter, identity).args[0]
    frames, _ = face_swap_video.make_video(7, 70, 75)  # cropped to 64x64, trimmed to 5 frames
    images = torch.from_numpy(frames.astype(np.float32) / 255.0)
    pasted, mask, width, height, length = mods["prepare_face_swap"].PrepareFaceSwapVideo.execute(images, identity).args
    latent = comfy_nodes.VAEEncode().encode(vae, pasted)[0]
    masked = mods["face_swap_latent_mask"].FaceSwapLatentMask.execute(latent, mask).args[0]
    g = torch.Generator().manual_seed(0)
    pos = [[torch.randn(1, 8, 4096, generator=g), {}]]
    neg = [[torch.randn(1, 8, 4096, generator=g), {}]]
    return dict(mods, model=model, patched=patched, vae=vae, identity=identity, pasted=pasted, mask=mask,
                latent=latent, masked=masked, pos=pos, neg=neg, size=(width, height, length), images=images)


def official_sampler(source, noise, mask):
    """The official denoising loop with force_background_consistency, on ComfyUI's denoiser.

    source, noise: [B, C, T, h, w] in the model's latent space; mask: hard latent mask (1 = face).
    The run starts from noise_scaling(sigma_0) = (1 - sigma_0) * source + sigma_0 * noise, which is
    the official scheduler.add_noise at the first timestep."""
    @torch.no_grad()
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        last = len(sigmas) - 2
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            denoised = model(x, sigma * x.new_ones([x.shape[0]]), **extra_args)
            velocity = (x - denoised) / sigma          # the flow model's output
            x = x + velocity * (sigma_next - sigma)    # FlowMatchScheduler.step
            renoised = source if i == last else (1 - sigma_next) * source + sigma_next * noise  # add_noise(next t)
            x = (1 - mask) * renoised + mask * x
        return x
    return comfy.samplers.KSAMPLER(sample)


def sigmas_for(model, steps=STEPS, denoise=DENOISE):
    return comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler="euler", scheduler="simple",
                                   denoise=denoise).sigmas


def run_official(env, model, latent, mask, sigmas):
    samples = latent["samples"]
    noise = comfy.sample.prepare_noise(samples, SEED)
    source = model.model.process_latent_in(samples)
    hard = comfy.utils.reshape_mask(mask, samples.shape)
    return comfy.sample.sample_custom(model, noise, CFG, official_sampler(source, noise, hard), sigmas, env["pos"],
                                      env["neg"], samples, noise_mask=None, seed=SEED)


def sample_video(env, model, latent, model_2=None, boundary=0.875):
    return env["sample_video"].SampleVideo.execute(model, env["pos"], env["neg"], 64, 64, 5, 1, SEED, STEPS, CFG,
                                                   "euler", "simple", DENOISE, latent=latent, model_2=model_2,
                                                   switch_boundary=boundary).args[0]["samples"]


def test_prepared_video_and_mask_shapes(env):
    assert env["size"] == (64, 64, 5)
    assert env["pasted"].shape == (5, 64, 64, 3) and env["mask"].shape == (5, 64, 64)
    assert env["latent"]["samples"].shape == (1, 16, 2, 8, 8)
    mask = env["masked"]["noise_mask"]
    assert mask.shape == (1, 1, 2, 8, 8)
    assert set(mask.unique().tolist()) == {0.0, 1.0}, "the face must be found and the mask must be hard"


def test_latent_mask_is_the_official_one():
    """Official: 8-bit mask -> [-1, 1] in bf16 (preprocess_video), nearest-exact onto the latent
    grid (T frames -> (T - 1) / 4 + 1), > 0.5."""
    lm = conftest.pack_module("nodes.face_swap_latent_mask")
    g = torch.Generator().manual_seed(1)
    for frames, h, w in ((81, 480, 832), (9, 64, 48), (1, 32, 32)):
        mask8 = torch.randint(0, 256, (frames, h, w), generator=g, dtype=torch.uint8)
        mask8[:, : h // 3] = torch.tensor([191, 192], dtype=torch.uint8).repeat(w // 2)[:w]  # the threshold's edge
        official = (mask8.to(torch.bfloat16) * (2 / 255) - 1)[None, None]
        lt = (frames - 1) // 4 + 1
        official = torch.nn.functional.interpolate(official, size=(lt, h // 8, w // 8), mode="nearest-exact") > 0.5
        ours = lm.latent_mask(mask8.float() / 255.0, (1, 16, lt, h // 8, w // 8))
        assert ours.shape == (1, 1, lt, h // 8, w // 8)
        assert torch.equal(ours.bool(), official), (frames, h, w)
    with pytest.raises(ValueError, match="does not belong to this latent"):
        lm.latent_mask(torch.zeros(9, 64, 64), (1, 16, 2, 8, 8))


def test_comfyui_masked_sampling_is_the_official_background_consistency(env):
    sigmas = sigmas_for(env["patched"])
    official = run_official(env, env["patched"], env["latent"], env["masked"]["noise_mask"], sigmas)
    ours = sample_video(env, env["patched"], env["masked"])
    diff = float((ours - official).abs().max())
    print(f"RePaint equivalence (one model): max |Sample Video - official loop| = {diff:.2e} "
          f"over {STEPS} steps at denoise {DENOISE}")
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=1e-5)
    # The mask matters: without it the background is regenerated too.
    free = sample_video(env, env["patched"], env["latent"])
    keep = env["masked"]["noise_mask"].expand_as(ours) < 0.5
    assert (free - ours)[keep].abs().max() > 1e-3


def test_final_latent_outside_the_mask_is_the_source_latent(env):
    ours = sample_video(env, env["patched"], env["masked"])
    source = env["latent"]["samples"]
    mask = env["masked"]["noise_mask"].expand_as(ours)
    outside = mask < 0.5
    inside = ~outside
    assert outside.any() and inside.any()
    torch.testing.assert_close(ours[outside], source[outside], atol=1e-5, rtol=1e-5)
    assert (ours - source)[inside].abs().max() > 1e-3  # the face was regenerated


def expert(model, scale, shift):
    """A clone whose output is changed (another 'expert' on the same weights)."""
    m = model.clone()
    m.set_model_unet_function_wrapper(lambda apply, a: apply(a["input"], a["timestep"], **a["c"]) * scale + shift)
    return m


def test_two_experts_with_a_noise_mask_follow_the_official_loop(env):
    """Wan 2.2 A14B: the low-noise expert takes over below the boundary. The official loop
    switches models inside one run; Sample Video runs two. The background must still be the
    source re-noised with the one starting noise, and the result equal the official loop's."""
    sigmas = sigmas_for(env["model"])
    boundary = float(sigmas[2] + sigmas[3]) / 2
    high, low = expert(env["model"], 1.0, 0.0), expert(env["model"], 0.7, 0.05)
    switching = env["model"].clone()  # the unet function wrapper sees sigma as its timestep

    def switch(apply, a):
        high_noise = float(a["timestep"][0]) >= boundary
        return apply(a["input"], a["timestep"], **a["c"]) * (1.0 if high_noise else 0.7) + (0.0 if high_noise else 0.05)
    switching.set_model_unet_function_wrapper(switch)
    official = run_official(env, switching, env["latent"], env["masked"]["noise_mask"], sigmas)
    ours = sample_video(env, high, env["masked"], model_2=low, boundary=boundary)
    diff = float((ours - official).abs().max())
    print(f"RePaint equivalence (two experts, switch after step 3 of {STEPS}): max diff = {diff:.2e}")
    # float32 rounding of the hand-over (one division by sigma) is carried through the low expert's steps
    torch.testing.assert_close(ours, official, atol=5e-5, rtol=1e-5)
    outside = env["masked"]["noise_mask"].expand_as(ours) < 0.5
    torch.testing.assert_close(ours[outside], env["latent"]["samples"][outside], atol=1e-5, rtol=1e-5)
    # The same model on both inputs is one model: the split must not change the result.
    once = sample_video(env, high, env["masked"])
    twice = sample_video(env, high, env["masked"], model_2=high, boundary=boundary)
    torch.testing.assert_close(twice, once, atol=5e-5, rtol=1e-5)


def official_sigmas(steps, strength, shift):
    """FlowMatchScheduler(shift=5, sigma_min=0, extra_one_step=True).set_timesteps(steps, strength)."""
    start = 0.0 + (1.0 - 0.0) * strength
    s = torch.linspace(start, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return shift * s / (1 + (shift - 1) * s)


def test_denoise_reproduces_the_official_schedule_closely(env):
    """20 steps at strength 0.85 with shift 5: ComfyUI's denoise keeps the last 21 of int(20 / 0.85) = 23
    simple-schedule sigmas; the official scheduler spaces 20 sigmas linearly from 0.85 before the shift."""
    ours = sigmas_for(env["model"], steps=20, denoise=0.85).double()
    official = official_sigmas(20, 0.85, 5.0)
    assert len(ours) == 21 and float(ours[-1]) == 0.0  # 20 steps down to 0, as officially (last step to 0)
    delta = (ours[:-1] - official).abs()
    # The strength whose official start sigma is ComfyUI's: invert sigma = 5s / (1 + 4s).
    start = float(ours[0])
    strength = start / (5 - 4 * start)
    print(f"schedule 20 steps, denoise 0.85, shift 5: ComfyUI start sigma {start:.5f} vs official "
          f"{float(official[0]):.5f} (ComfyUI acts like strength {strength:.3f}); max |dsigma| {float(delta.max()):.4f}")
    assert math.isclose(float(official[0]), 0.96591, abs_tol=1e-5)
    assert float(delta.max()) < 0.01

