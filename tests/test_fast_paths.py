"""The paths that keep the identity cheap: no attention mask at strength 1, the cache's
placement; each must give exactly what the plain computation gives."""


import torch

import wan_tiny


def attention_calls(model, inputs, steps=2, **sample_kwargs):
    """Sample through ComfyUI and record every attention call's key count and mask."""
    calls = []

    def spy(func, q, k, v, *args, **kwargs):
        calls.append({"queries": q.shape[1], "keys": k.shape[1], "mask": kwargs.get("mask")})
        return func(q, k, v, *args, **kwargs)

    spied = model.clone()
    spied.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = spy
    wan_tiny.sample(spied, inputs["context_pos"], inputs["context_neg"], seed=1, steps=steps, **sample_kwargs)
    return calls


def test_strength_one_builds_no_attention_mask(base, inputs, adapter, standin):
    ref_tokens = 16            # the fixture reference: latent 8x8 -> 4x4 patches
    video_tokens = 3 * 6 * 8   # latent 3x12x16 -> 3x6x8 patches
    blocks = len(base.model.diffusion_model.blocks)

    calls = attention_calls(standin.apply_standin(base, adapter, inputs["ip_latent"]), inputs)
    joint = [c for c in calls if c["keys"] == video_tokens + ref_tokens]
    assert len(joint) == 2 * blocks  # every block of both steps' calls saw the reference keys
    assert all(c["mask"] is None for c in calls), "strength 1 must stay on the mask-free path"

    calls = attention_calls(standin.apply_standin(base, adapter, inputs["ip_latent"], strength=0.5), inputs)
    masks = [c["mask"] for c in calls if c["keys"] == video_tokens + ref_tokens]
    assert len(masks) == 2 * blocks and all(m is not None for m in masks)
    expected = torch.zeros(video_tokens + ref_tokens)
    expected[video_tokens:] = torch.log(torch.tensor(0.5))
    for m in masks:
        torch.testing.assert_close(m.reshape(-1).float(), expected)


def test_cache_on_cpu_gives_the_default_output(base, inputs, adapter, standin, monkeypatch):
    # The test host computes on the CPU, so this checks the option's plumbing and where the
    # cache lives; on a GPU the same comparison spans a host-to-device copy per block.
    placed = []
    original = standin.StandInPatch.build

    def recording_build(self, *args, **kwargs):
        kv = original(self, *args, **kwargs)
        placed.append({t.device.type for t in kv.keys + kv.values})
        return kv

    monkeypatch.setattr(standin.StandInPatch, "build", recording_build)
    ctx_p, ctx_n = inputs["context_pos"], inputs["context_neg"]
    default = wan_tiny.sample(standin.apply_standin(base, adapter, inputs["ip_latent"]), ctx_p, ctx_n, seed=5)
    on_cpu = wan_tiny.sample(standin.apply_standin(base, adapter, inputs["ip_latent"], cache_on_cpu=True),
                             ctx_p, ctx_n, seed=5)
    assert torch.equal(on_cpu, default)
    assert placed[1] == {"cpu"}


def test_context_windows_build_the_reference_once_and_every_window_attends_to_it(base, inputs, adapter, standin, monkeypatch):
    """The long-video template: ComfyUI's WAN Context Windows on top of the patched model. Five
    latent frames in windows of two overlapping by one (newer ComfyUI adds an anchor frame
    before each window): the reference K/V are built once for the whole sampling, every
    window's self-attention sees them, and no call sees the whole video."""
    import inspect

    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode
    builds = []
    original = standin.StandInPatch.build

    def counting_build(self, *args, **kwargs):
        builds.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(standin.StandInPatch, "build", counting_build)
    params = inspect.signature(WanContextWindowsManualNode.execute).parameters

    def windows(model):
        # in video frames: length 5 -> 2 latent frames, overlap 4 -> 1 (0.3.75 and 0.33 alike)
        kwargs = dict(context_length=5, context_overlap=4, context_schedule="standard_static", context_stride=1,
                      closed_loop=False, fuse_method="pyramid")
        if "freenoise" in params:  # newer ComfyUI
            kwargs["freenoise"] = False
        return WanContextWindowsManualNode.execute(model, **kwargs).result[0]

    frames, per_frame, ref_tokens, steps = 5, 6 * 8, 16, 2
    shape = (1, 16, frames, 12, 16)
    windowed = windows(standin.apply_standin(base, adapter, inputs["ip_latent"]))
    calls = attention_calls(windowed, inputs, steps=steps, latent_shape=shape)
    text_tokens = inputs["context_pos"].shape[1]
    video = [c["keys"] for c in calls if c["keys"] not in (text_tokens, ref_tokens)]
    blocks = len(base.model.diffusion_model.blocks)
    assert len(video) >= steps * 2 * blocks, video  # at least two windows a step
    for keys in video:
        window_frames, rest = divmod(keys - ref_tokens, per_frame)
        assert rest == 0 and 1 <= window_frames < frames, (keys, video)  # a window plus the reference
    assert len(builds) == 1
    ctx_p, ctx_n = inputs["context_pos"], inputs["context_neg"]
    assert not torch.equal(wan_tiny.sample(windowed, ctx_p, ctx_n, seed=2, steps=2, latent_shape=shape),
                           wan_tiny.sample(windows(base), ctx_p, ctx_n, seed=2, steps=2, latent_shape=shape))
