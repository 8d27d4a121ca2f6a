"""The pack's nodes called in-process, beside ComfyUI's own samplers: KSampler,
KSamplerAdvanced, SamplerCustomAdvanced and Sample Video must agree with each other."""

import os

import numpy as np
import pytest
import torch

import comfy.sd
import comfy.utils
import folder_paths
import nodes as comfy_nodes
from comfy_extras import nodes_custom_sampler as ncs

import conftest
import tiny_models

STEPS, CFG, SEED = 4, 4.0, 17


@pytest.fixture(autouse=True)
def as_comfyui_runs_nodes():
    """ComfyUI executes every node under inference mode."""
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from skimage import data
    models = str(tmp_path_factory.mktemp("models"))
    written = tiny_models.write_all(models)
    pack_nodes = {name.rsplit(".", 1)[-1]: conftest.pack_module(name) for name in
                  ("nodes.load_adapter", "nodes.encode_reference", "nodes.apply_identity", "nodes.sample_video",
                   "nodes.sockets")}
    folder_paths.add_model_folder_path("standin", os.path.join(models, "standin"))
    pack_nodes["load_adapter"].register_model_folder()
    model = comfy.sd.load_diffusion_model(written[tiny_models.TINY_DIT], model_options={"dtype": torch.float32})
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(written[tiny_models.TINY_VAE]))
    adapter = pack_nodes["load_adapter"].LoadIdentityAdapter.execute(tiny_models.TINY_ADAPTER)[0]
    photo = torch.from_numpy(data.astronaut().astype(np.float32) / 255.0).unsqueeze(0)
    identity, preview = pack_nodes["encode_reference"].EncodeReferenceFace.execute(photo, vae).args
    g = torch.Generator().manual_seed(0)
    pos = [[torch.randn(1, 8, 4096, generator=g), {}]]
    neg = [[torch.randn(1, 8, 4096, generator=g), {}]]
    return dict(model=model, vae=vae, adapter=adapter, identity=identity, preview=preview, pos=pos, neg=neg,
                latent={"samples": torch.zeros(1, 16, 2, 8, 8)}, **pack_nodes)


def apply(env, model=None, **kw):
    args = dict(strength=1.0, start_percent=0.0, end_percent=1.0) | kw
    return env["apply_identity"].ApplyRSACPM.execute(model or env["model"], env["adapter"], env["identity"], **args)[0]


def ksampler(env, model, sampler="euler", scheduler="simple"):
    return comfy_nodes.KSampler().sample(model, SEED, STEPS, CFG, sampler, scheduler, env["pos"], env["neg"],
                                         env["latent"])[0]["samples"]


def sample_video(env, model, model_2=None, boundary=0.875, sampler="euler", scheduler="simple", vae=None):
    out = env["sample_video"].SampleVideo.execute(model, env["pos"], env["neg"], 64, 64, 5, 1, SEED, STEPS, CFG,
                                                  sampler, scheduler, 1.0, model_2=model_2,
                                                  switch_boundary=boundary, vae=vae)
    return out.args


def test_preview_is_exactly_what_was_encoded(env):
    preview = env["preview"]
    assert preview.shape == (1, 512, 512, 3)
    assert torch.equal(env["identity"].image, preview)
    assert torch.equal(torch.round(preview * 255) / 255, preview)  # 8-bit levels, as the official PIL image
    again = env["vae"].encode(preview)
    assert torch.equal(again, env["identity"].latent)


def test_sample_video_equals_ksampler(env):
    patched = apply(env)
    for sampler, scheduler in (("euler", "simple"), ("uni_pc", "simple")):
        ref = ksampler(env, patched, sampler, scheduler)
        latent, images = sample_video(env, patched, sampler=sampler, scheduler=scheduler)
        torch.testing.assert_close(latent["samples"], ref, atol=1e-6, rtol=1e-6)
    assert images.shape == (5, 64, 64, 3)  # no VAE: a latent colour preview per frame


def test_sampler_custom_advanced_equals_ksampler(env):
    patched = apply(env)
    guider = ncs.CFGGuider.execute(patched, env["pos"], env["neg"], CFG)[0]
    sampler = ncs.KSamplerSelect.execute("euler")[0]
    sigmas = ncs.BasicScheduler.execute(patched, "simple", STEPS, 1.0)[0]
    noise = ncs.RandomNoise.execute(SEED)[0]
    out = ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, env["latent"])[0]["samples"]
    torch.testing.assert_close(out, ksampler(env, patched), atol=1e-6, rtol=1e-6)
    assert (out - ksampler(env, env["model"])).abs().max() > 1e-3


def test_two_experts_equal_two_ksampler_advanced(env):
    """Sample Video with model_2 is the standard Wan 2.2 recipe: KSamplerAdvanced on the high
    expert for the steps above the boundary, then on the low expert for the rest."""
    high = apply(env)
    low = apply(env, model=env["model"], strength=0.5)  # another model object, another identity pull
    sigmas = comfy.samplers.KSampler(high, STEPS, "cpu", "euler", "simple", 1.0).sigmas
    boundary = float(sigmas[2]) + 1e-4  # steps 0 and 1 on high, 2 and 3 on low
    ksa = comfy_nodes.KSamplerAdvanced()
    first = ksa.sample(high, "enable", SEED, STEPS, CFG, "euler", "simple", env["pos"], env["neg"], env["latent"],
                       0, 2, "enable")[0]
    second = ksa.sample(low, "disable", SEED, STEPS, CFG, "euler", "simple", env["pos"], env["neg"], first,
                        2, 10000, "disable")[0]["samples"]
    latent, _ = sample_video(env, high, model_2=low, boundary=boundary)
    torch.testing.assert_close(latent["samples"], second, atol=1e-6, rtol=1e-6)
    only_high, _ = sample_video(env, high)
    assert (only_high["samples"] - second).abs().max() > 1e-4


def test_sample_video_decodes_with_the_vae(env):
    latent, images = sample_video(env, apply(env), vae=env["vae"])
    assert images.shape == (5, 64, 64, 3)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0


@pytest.mark.parametrize("width, height, length, message", [
    (100, 64, 5, "width 100 is not a multiple of 16 \\(use 96 or 112\\)"),
    (64, 64, 6, "length 6 is not of the form 4n\\+1 \\(use 5 or 9 frames\\)"),
])
def test_sample_video_refuses_sizes_wan_cannot_take(env, width, height, length, message):
    with pytest.raises(ValueError, match=message):
        env["sample_video"].SampleVideo.execute(env["model"], env["pos"], env["neg"], width, height, length, 1,
                                                SEED, 1, CFG, "euler", "simple", 1.0)


@pytest.mark.parametrize("width, height, length, wrong, tail", [
    (250, 480, 81, ["width 250 is not a multiple of 16 (use 240 or 256)"],
     "Change width only; height 480 and length 81 are fine."),
    (832, 480, 18, ["length 18 is not of the form 4n+1 (use 17 or 21 frames)"],
     "Change length only; width 832 and height 480 are fine."),
    (250, 480, 18, ["width 250 is not a multiple of 16 (use 240 or 256)",
                    "length 18 is not of the form 4n+1 (use 17 or 21 frames)"],
     "Change width and length only; height 480 is fine."),
    (250, 8, 18, ["width 250", "height 8 is outside 16..8192", "length 18"], "Change width, height and length."),
    (250, None, 81, ["width 250"], "Change width only; length 81 is fine."),  # height linked: not known yet
])
def test_a_refused_size_names_only_the_inputs_to_change(env, width, height, length, wrong, tail):
    node = env["sample_video"].SampleVideo
    message = node.validate_inputs(width=width, height=height, length=length)
    assert isinstance(message, str) and message.endswith(tail)
    for part in wrong:
        assert part in message
    problems = env["sample_video"].video_size_problems(width, height, length)
    named = {n for n in ("width", "height", "length") if any(p.startswith(n) for p in wrong)}
    assert set(problems) == named
    # Every input the refusal does not name is either fine by name or unknown (linked).
    for name, value in (("width", width), ("height", height), ("length", length)):
        if name not in named and value is not None:
            assert f"{name} {value}" in tail and name not in message.split(" Change ")[0]
    assert node.validate_inputs(width=832, height=480, length=81) is True


def test_apply_node_defaults_strength_zero_and_window(env):
    plain = ksampler(env, env["model"])
    assert torch.equal(ksampler(env, apply(env, strength=0.0)), plain)
    assert torch.equal(ksampler(env, apply(env, start_percent=0.6, end_percent=0.6)), plain)
    assert not torch.equal(ksampler(env, apply(env)), plain)


def test_identity_from_another_vae_is_refused(env, tmp_path):
    taesd = comfy.sd.VAE(sd=comfy.utils.load_torch_file(
        tiny_models.write_all(str(tmp_path))[tiny_models.TINY_TAESD]))
    with pytest.raises(ValueError, match="must be encoded with the Wan 2.1 VAE.*TAESD VAE \\(4-channel latents\\)"):
        env["encode_reference"].EncodeReferenceFace.execute(env["preview"], taesd)
    types = env["sockets"]
    wrong = types.Identity(latent=torch.zeros(1, 48, 1, 32, 32), image=env["preview"], vae_kind="wan2.2",
                           latent_channels=48)
    with pytest.raises(ValueError, match="48-channel latents.*Re-encode the reference with the Wan 2.1 VAE"):
        env["apply_identity"].ApplyRSACPM.execute(env["model"], env["adapter"], wrong, 1.0, 0.0, 1.0)


def test_load_adapter_validation(env):
    node = env["load_adapter"].LoadIdentityAdapter
    assert node.validate_inputs(tiny_models.TINY_ADAPTER) is True
    assert "refused" in node.validate_inputs("../secrets.safetensors")
    assert "refused" in node.validate_inputs("/etc/passwd")
    missing = node.validate_inputs("Stand-In_wan2.2_T2V_A14B_low.ckpt")
    assert "huggingface.co/BowenXue/Stand-In/resolve/main/Stand-In_wan2.2_T2V_A14B_low.ckpt" in missing
    assert "models/standin" in missing


# ------------------------------------------------------------------------------------
# Hostile inputs
# ------------------------------------------------------------------------------------

def encode(env, image, **kw):
    return env["encode_reference"].EncodeReferenceFace.execute(image, env["vae"], **kw)


def test_tiny_and_huge_photos(env):
    identity, preview = encode(env, torch.rand(1, 1, 1, 3)).args
    assert preview.shape == (1, 512, 512, 3) and identity.latent.shape == (1, 16, 1, 64, 64)
    # 9000x8000 = 72 MP, a view without memory behind it: scaled down, not refused, and said so.
    huge = torch.full((1, 1, 1, 3), 0.5).expand(1, 8000, 9000, 3)
    identity, preview = encode(env, huge, detector="none").args
    assert preview.shape == (1, 512, 512, 3)
    assert any("scaled down to" in w for w in identity.warnings)


def test_bad_pixels_and_empty_batches_are_refused(env):
    nan = torch.rand(1, 64, 64, 3)
    nan[0, 3, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite pixel values"):
        encode(env, nan)
    with pytest.raises(ValueError, match="got no image"):
        encode(env, torch.zeros(0, 64, 64, 3))


def test_batch_uses_the_first_image_and_says_so(env):
    from skimage import data
    photo = torch.from_numpy(data.astronaut().astype(np.float32) / 255.0).unsqueeze(0)
    batch = torch.cat([photo, torch.rand_like(photo)])
    identity, preview = encode(env, batch).args
    assert torch.equal(preview, env["preview"])
    assert any("only the first is used" in w for w in identity.warnings)


def test_mask_of_another_shape_is_refused_with_a_reason(env):
    with pytest.raises(ValueError, match="mask"):
        encode(env, env["preview"], subject_mask=torch.ones(1, 100, 300))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_low_precision_adapters_are_accepted_and_computed_in_float32(env, dtype, tmp_path):
    adapter_mod = conftest.pack_module("engine.identity.adapter")
    sd = safetensors_load(os.path.join(os.path.dirname(tiny_models.write_all(str(tmp_path))[tiny_models.TINY_ADAPTER])),
                          tiny_models.TINY_ADAPTER)
    low = adapter_mod.StandInAdapter.from_state_dict({k: v.to(dtype) for k, v in sd.items()})
    assert low.spec.dtype == dtype
    x = torch.randn(1, 4, 256)
    got = low.lora(0).q_loras(x)
    want = x @ sd["blocks.0.self_attn.q_loras.down.weight"].to(dtype).float().T @ sd["blocks.0.self_attn.q_loras.up.weight"].to(dtype).float().T
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    standin = conftest.pack_module("engine.identity.patch")
    patched = standin.apply_standin(env["model"], low, env["model"].model.process_latent_in(env["identity"].latent))
    full = apply(env)
    out_low, out_full = ksampler(env, patched), ksampler(env, full)
    assert torch.isfinite(out_low).all()
    # Quantised weights move the result a little, never far (fp8 keeps ~2 significant digits).
    relative = float((out_low - out_full).abs().max() / out_full.abs().max())
    assert 0 < relative < (0.1 if dtype == torch.float8_e4m3fn else 0.01)


def safetensors_load(folder, name):
    import safetensors.torch
    return safetensors.torch.load_file(os.path.join(folder, name))


def test_adapter_folder_keeps_what_extra_model_paths_yaml_configured(tmp_path, monkeypatch):
    """extra_model_paths.yaml is read before custom nodes load; registering the pack's folder
    keeps the user's folder first and adds models/standin after it."""
    import copy as copy_mod
    import importlib.util
    import comfyhost
    # Loaded by path: ComfyUI's comfy/ folder lands on sys.path during the tests and its
    # comfy/utils.py would shadow the top-level utils package.
    spec = importlib.util.spec_from_file_location(
        "standin_test_extra_config", os.path.join(comfyhost.find_comfyui(), "utils", "extra_config.py"))
    extra_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extra_config)
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", copy_mod.deepcopy(folder_paths.folder_names_and_paths))
    folder_paths.folder_names_and_paths.pop("standin", None)
    mine = tmp_path / "my_adapters"
    mine.mkdir()
    (mine / "from_yaml.safetensors").write_bytes(b"")
    yaml_path = tmp_path / "extra_model_paths.yaml"
    yaml_path.write_text(f"mine:\n    base_path: {tmp_path}\n    standin: my_adapters\n")
    extra_config.load_extra_path_config(str(yaml_path))
    load_adapter = conftest.pack_module("nodes.load_adapter")
    load_adapter.register_model_folder()
    load_adapter.register_model_folder()  # idempotent
    paths = folder_paths.get_folder_paths("standin")
    assert paths == [str(mine), os.path.join(folder_paths.models_dir, "standin")]
    assert "from_yaml.safetensors" in folder_paths.get_filename_list("standin")
