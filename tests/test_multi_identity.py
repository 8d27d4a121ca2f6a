"""Several people on one model (the official dev/multi baseline) and each person in their own
place (regions): exactness, one K/V build per generation, memory, Wan 2.2 experts, context windows."""

import os

import pytest
import torch

import conftest
import wan_tiny


@pytest.fixture(scope="module")
def multi():
    """The multi fixture's tiny DiT, adapter and two references."""
    folder = conftest.MULTI_FIXTURE_DIR
    adapter_mod = conftest.pack_module("engine.identity.adapter")
    inputs = wan_tiny.fixture_inputs(folder)
    return dict(model=wan_tiny.load_model(os.path.join(folder, "model.safetensors")),
                adapter=adapter_mod.load_adapter_file(os.path.join(folder, "standin_adapter.safetensors")),
                refs=[inputs["ip_latent_0"], inputs["ip_latent_1"]], inputs=inputs)


@pytest.fixture(scope="module")
def regions():
    return conftest.pack_module("engine.identity.regions")


def people(standin, refs, strengths=None, layouts=None, masks=None):
    n = len(refs)
    strengths = strengths or [1.0] * n
    out = []
    for j in range(n):
        layout = (layouts or [None] * n)[j]
        mask = (masks or [None] * n)[j]
        region = None
        if layout is not None or mask is not None:
            region = conftest.pack_module("engine.identity.regions").Region(layout or "whole frame", mask)
        out.append(standin.IdentitySpec(refs[j], strengths[j], region))
    return out


def sample(model, m, seed=3, **kw):
    return wan_tiny.sample(model, m["inputs"]["context_pos"], m["inputs"]["context_neg"], seed=seed, steps=2, **kw)


def other(ref, seed):
    return torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def counting(standin, monkeypatch):
    """Counts K/V builds (per generation) and single-reference passes (per person)."""
    record = {"builds": 0, "passes": 0, "kv": []}
    build, one = standin.StandInPatch.build, standin.build_reference_kv

    def counting_build(self, *args, **kwargs):
        kv = build(self, *args, **kwargs)
        record["builds"] += 1
        record["kv"].append(kv)
        return kv

    def counting_pass(*args, **kwargs):
        record["passes"] += 1
        return one(*args, **kwargs)

    monkeypatch.setattr(standin.StandInPatch, "build", counting_build)
    monkeypatch.setattr(standin, "build_reference_kv", counting_pass)
    return record


def test_one_identity_in_a_list_is_today_bit_for_bit(base, inputs, adapter, standin):
    ctx = inputs["context_pos"], inputs["context_neg"]
    for strength in (1.0, 0.5):
        today = wan_tiny.sample(standin.apply_standin(base, adapter, inputs["ip_latent"], strength=strength), *ctx, seed=4)
        as_list = wan_tiny.sample(standin.apply_standin(base, adapter, [standin.IdentitySpec(inputs["ip_latent"])],
                                                        strength=strength), *ctx, seed=4)
        own = wan_tiny.sample(standin.apply_standin(base, adapter, [standin.IdentitySpec(inputs["ip_latent"], strength)]),
                              *ctx, seed=4)
        assert torch.equal(today, as_list) and torch.equal(today, own)


@pytest.mark.parametrize("n", [2, 3])
def test_one_kv_build_per_generation_and_memory_is_n_times_one(multi, standin, counting, n):
    refs = (multi["refs"] + [other(multi["refs"][0], 11)])[:n]
    one = standin.apply_standin(multi["model"], multi["adapter"], multi["refs"][0])
    sample(one, multi)
    one_bytes = counting["kv"][-1].nbytes
    counting.update(builds=0, passes=0)
    several = standin.apply_standin(multi["model"], multi["adapter"], people(standin, refs))
    sample(several, multi, latent_shape=(2, 16, 3, 12, 16))  # cond + uncond, batch 2, 2 steps
    assert counting["builds"] == 1 and counting["passes"] == n
    kv = counting["kv"][-1]
    assert kv.nbytes == n * one_bytes
    assert kv.spans == tuple((j * 16, (j + 1) * 16) for j in range(n))


def test_placement_follows_the_official_offset_and_other_sizes_are_placed_by_the_same_rule(multi, standin):
    dm = multi["model"].model.diffusion_model
    a, b = multi["refs"]
    assert standin.reference_offsets(dm, [a, b, a]) == [0, 4, 8]     # 8x8 latents: 4x4 patches
    bigger = torch.zeros(1, 16, 1, 12, 8)                              # 6x4 patches
    assert standin.reference_offsets(dm, [bigger, a, b]) == [0, 6, 10]
    patched = standin.apply_standin(multi["model"], multi["adapter"], people(standin, [bigger, a]))
    out = sample(patched, multi)
    assert torch.isfinite(out).all()


def test_order_matters_and_strength_zero_leaves_a_person_out(multi, standin, counting):
    a, b = multi["refs"]
    ab = sample(standin.apply_standin(multi["model"], multi["adapter"], people(standin, [a, b])), multi)
    ba = sample(standin.apply_standin(multi["model"], multi["adapter"], people(standin, [b, a])), multi)
    assert (ab - ba).abs().max() > 1e-3
    only_a = sample(standin.apply_standin(multi["model"], multi["adapter"], a), multi)
    counting.update(passes=0)
    a_and_silent_b = sample(standin.apply_standin(multi["model"], multi["adapter"],
                                                  people(standin, [a, b], strengths=[1.0, 0.0])), multi)
    assert torch.equal(only_a, a_and_silent_b)
    assert counting["passes"] == 1  # nothing is computed for a person at strength 0


def block_outputs(standin, model, m, block=0, **sample_kw):
    """Sample with a block replacement installed before Stand-In (so Stand-In chains it) that
    records block ``block``'s output at every call."""
    seen = []

    def record(args, extra):
        out = extra["original_block"](args)
        seen.append(out["img"].clone())
        return out

    spied = model.clone()
    spied.set_model_patch_replace(record, "dit", "double_block", block)
    return spied, seen


def region_run(standin, m, refs, layouts, block=0, masks=None):
    spied, seen = block_outputs(standin, m["model"], m, block)
    patched = standin.apply_standin(spied, m["adapter"], people(standin, refs, layouts=layouts, masks=masks))
    sample(patched, m, seed=5)
    return seen[0]      # the first call: same noisy latent in every run


def test_region_exactness_outside_unchanged_inside_changed(multi, standin, regions):
    """Block 0's output (the first place a reference enters): a video token outside person j's
    region is bit for bit the same when person j's reference changes; inside it changes."""
    a, b = multi["refs"]
    grid = (3, 6, 8)
    right = regions.Region("right half").tokens(range(grid[0]), grid[1], grid[2]).reshape(-1)
    left = regions.Region("left half").tokens(range(grid[0]), grid[1], grid[2]).reshape(-1)
    assert right.sum() == left.sum() == 72 and not (right & left).any()
    base_out = region_run(standin, multi, [a, b], ["left half", "right half"])
    b_changed = region_run(standin, multi, [a, other(b, 3)], ["left half", "right half"])
    a_changed = region_run(standin, multi, [other(a, 4), b], ["left half", "right half"])
    assert torch.equal(base_out[:, left], b_changed[:, left])
    assert (base_out[:, right] - b_changed[:, right]).abs().amax(-1).min() > 0  # every token inside
    assert torch.equal(base_out[:, right], a_changed[:, right])
    assert (base_out[:, left] - a_changed[:, left]).abs().amax(-1).min() > 0


def test_per_frame_mask_region_is_exact_frame_by_frame(multi, standin, regions):
    """A mask per video frame: person 1 on the left in latent frame 0 (video frame 0), on the
    right in latent frames 1 and 2 (video frames 1-8); person 2 everywhere."""
    a, b = multi["refs"]
    mask = torch.zeros(9, 24, 32)
    mask[0, :, :16] = 1
    mask[1:, :, 16:] = 1
    inside = regions.Region(mask=mask).tokens(range(3), 6, 8)
    assert inside[0, :, :4].all() and not inside[0, :, 4:].any()
    assert inside[1:, :, 4:].all() and not inside[1:, :, :4].any()
    inside = inside.reshape(-1)
    base_out = region_run(standin, multi, [a, b], [None, None], masks=[mask, None])
    a_changed = region_run(standin, multi, [other(a, 8), b], [None, None], masks=[mask, None])
    assert torch.equal(base_out[:, ~inside], a_changed[:, ~inside])
    assert (base_out[:, inside] - a_changed[:, inside]).abs().amax(-1).min() > 0


def test_whole_frame_regions_take_the_ungrouped_path_with_no_mask(multi, standin):
    a, b = multi["refs"]
    plain = sample(standin.apply_standin(multi["model"], multi["adapter"], people(standin, [a, b])), multi)
    whole = sample(standin.apply_standin(multi["model"], multi["adapter"],
                                         people(standin, [a, b], layouts=["whole frame", "whole frame"])), multi)
    assert torch.equal(plain, whole)


def test_grouped_attention_equals_a_dense_mask(multi, standin, regions):
    """The grouped attention against the dense [queries x keys] formulation it avoids: block 0's
    self-attention, person 1 (strength 0.5) in the left third, person 2 in the right half,
    recomputed as one masked softmax over [video; ref 1; ref 2]."""
    a, b = multi["refs"]
    captured = []

    def spy(func, q, k, v, *args, **kwargs):
        out = func(q, k, v, *args, **kwargs)
        captured.append((q, k, v, kwargs.get("mask"), out))
        return out

    spied = multi["model"].clone()
    spied.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = spy
    patched = standin.apply_standin(spied, multi["adapter"],
                                    people(standin, [a, b], strengths=[0.5, 1.0], layouts=["left third", "right half"]))
    sample(patched, multi)
    groups = regions.query_groups([regions.Region("left third"), regions.Region("right half")], range(3), 6, 8)
    assert {g.allowed for g in groups} == {(0,), (1,), ()}
    n_video, n_ref = 144, 16
    assert sorted(torch.cat([g.index for g in groups]).tolist()) == list(range(n_video))
    calls = [c for c in captured if c[1].shape[1] >= n_video][:len(groups)]   # block 0's groups
    batch, dim = calls[0][0].shape[0], calls[0][0].shape[-1]
    q = torch.zeros(batch, n_video, dim)
    out = torch.zeros(batch, n_video, dim)
    k_ref = {}
    for (qg, kg, vg, mask, og), group in zip(calls, groups):
        assert qg.shape[1] == len(group.index) and kg.shape[1] == n_video + n_ref * len(group.allowed)
        assert (mask is not None) == (0 in group.allowed)
        q[:, group.index], out[:, group.index] = qg, og
        k_video, v_video = kg[:, :n_video], vg[:, :n_video]
        for n, j in enumerate(group.allowed):
            sl = slice(n_video + n * n_ref, n_video + (n + 1) * n_ref)
            k_ref[j] = (kg[:, sl], vg[:, sl])
    keys = torch.cat([k_video, k_ref[0][0], k_ref[1][0]], 1)
    values = torch.cat([v_video, k_ref[0][1], k_ref[1][1]], 1)
    bias = torch.zeros(n_video, n_video + 2 * n_ref)
    for j, strength in ((0, 0.5), (1, 1.0)):
        cols = slice(n_video + j * n_ref, n_video + (j + 1) * n_ref)
        bias[:, cols] = torch.log(torch.tensor(strength))
        outside = torch.ones(n_video, dtype=torch.bool)
        for g in groups:
            if j in g.allowed:
                outside[g.index] = False
        bias[outside, cols] = float("-inf")
    heads = multi["model"].model.diffusion_model.blocks[0].self_attn.num_heads
    split = lambda t: t.reshape(batch, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    dense = torch.nn.functional.scaled_dot_product_attention(split(q), split(keys), split(values), attn_mask=bias)
    dense = dense.transpose(1, 2).reshape(batch, n_video, dim)
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)


def test_two_identities_on_wan22_two_experts(multi, standin, counting):
    """Wan 2.2 A14B: each expert carries both people (with regions) and its own adapter file;
    each expert's sampling run builds the K/V of both people once, and the low expert's part
    differs from the plain low expert's."""
    import comfy.sample
    a, b = multi["refs"]
    adapter_mod = conftest.pack_module("engine.identity.adapter")
    low_adapter = adapter_mod.load_adapter_file(os.path.join(conftest.MULTI_FIXTURE_DIR, "standin_adapter.ckpt"))
    regions = ["left half", "right half"]
    high = standin.apply_standin(multi["model"], multi["adapter"], people(standin, [a, b], layouts=regions))
    low = standin.apply_standin(multi["model"].clone(), low_adapter, people(standin, [a, b], layouts=regions))
    pos = [[multi["inputs"]["context_pos"], {}]]
    neg = [[multi["inputs"]["context_neg"], {}]]
    latent = torch.zeros(1, 16, 3, 12, 16)
    noise = comfy.sample.prepare_noise(latent, 9)

    def part(model, start, x, add_noise):
        # KSamplerAdvanced's two calls: steps 0-2 with noise and leftover noise, then 2-4
        return comfy.sample.sample(model, noise if add_noise else torch.zeros_like(noise), 4, 4.0, "euler", "simple",
                                   pos, neg, x, disable_noise=not add_noise, start_step=start,
                                   last_step=2 if add_noise else 10000, force_full_denoise=not add_noise,
                                   disable_pbar=True, seed=9)

    first = part(high, 0, latent, True)
    builds_high = counting["builds"]
    second = part(low, 2, first, False)
    assert builds_high == 1 and counting["builds"] == 2 and counting["passes"] == 4
    plain_low = part(multi["model"], 2, first, False)
    assert (second - plain_low).abs().max() > 1e-4


def test_context_windows_build_once_and_per_frame_regions_follow_the_window(multi, standin, counting, monkeypatch):
    """WAN Context Windows over five latent frames: the K/V of both people are built once; each
    window's groups come from that window's own frames of a per-frame mask."""
    import inspect

    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode
    a, b = multi["refs"]
    frames = 5
    mask = torch.zeros(4 * (frames - 1) + 1, 24, 32)
    mask[:5, :, :16] = 1      # latent frames 0, 1: left
    mask[5:, :, 16:] = 1      # latent frames 2 .. 4: right
    seen = []
    original = standin.RunCache.groups

    def recording(self, frame_index, grid_hw, device):
        groups = original(self, frame_index, grid_hw, device)
        seen.append((tuple(frame_index), groups))
        return groups

    monkeypatch.setattr(standin.RunCache, "groups", recording)
    kwargs = dict(context_length=5, context_overlap=4, context_schedule="standard_static", context_stride=1,
                  closed_loop=False, fuse_method="pyramid")
    if "freenoise" in inspect.signature(WanContextWindowsManualNode.execute).parameters:
        kwargs["freenoise"] = False
    patched = standin.apply_standin(multi["model"], multi["adapter"], people(standin, [a, b], masks=[mask, None]))
    windowed = WanContextWindowsManualNode.execute(patched, **kwargs).result[0]
    sample(windowed, multi, latent_shape=(1, 16, frames, 12, 16))
    assert counting["builds"] == 1
    windows = {fi for fi, _ in seen}
    assert len(windows) >= 2 and all(len(fi) < frames for fi in windows), windows
    for frame_index, groups in seen:
        tokens_per_frame = 6 * 8
        for g in groups or ():
            for pos in g.index.tolist():
                frame = frame_index[pos // tokens_per_frame]
                x = pos % 8
                sees_a = 0 in g.allowed
                assert sees_a == ((frame <= 1 and x < 4) or (frame >= 2 and x >= 4)), (frame_index, pos)


def test_region_and_identity_errors_are_clear(multi, standin, regions):
    a, b = multi["refs"]
    with pytest.raises(ValueError, match="Unknown layout"):
        regions.Region("upper left")
    with pytest.raises(ValueError, match="empty"):
        regions.Region(mask=torch.zeros(1, 8, 8))
    with pytest.raises(standin.StandInError, match="Identity 2: .*channels"):
        standin.apply_standin(multi["model"], multi["adapter"], people(standin, [a, torch.zeros(1, 48, 1, 8, 8)]))
    with pytest.raises(standin.StandInError, match="Identity 1: strength"):
        standin.apply_standin(multi["model"], multi["adapter"], people(standin, [a, b], strengths=[-1.0, 1.0]))
    with pytest.raises(standin.StandInError, match="at least one"):
        standin.apply_standin(multi["model"], multi["adapter"], [])


def test_add_identity_nodes_chain_people_into_apply(multi, standin):
    """Two Add Identity nodes chained into Apply give what the engine gives for the same people;
    wrong wires and empty masks are refused with a reason."""
    sockets = conftest.pack_module("nodes.sockets")
    add = conftest.pack_module("nodes.add_identity").AddIdentity
    apply_node = conftest.pack_module("nodes.apply_identity").ApplyRSACPM
    latent_in = multi["model"].model.process_latent_in
    a, b = multi["refs"]

    def person(latent):  # the raw VAE latent that process_latent_in turns into the fixture's
        raw = multi["model"].model.process_latent_out(latent)
        return sockets.Identity(latent=raw, image=torch.zeros(1, 8, 8, 3), vae_kind="test", latent_channels=16)

    first = add.execute(person(a), "left half", 1.0).args[0]
    both = add.execute(person(b), "right half", 0.5, identities=first).args[0]
    assert [p.region.layout for p in both.people] == ["left half", "right half"]
    assert [p.strength for p in both.people] == [1.0, 0.5]
    adapter = sockets.IdentityAdapter("fixture", multi["adapter"], None)
    by_node = apply_node.execute(multi["model"], adapter, both).args[0]
    regions = conftest.pack_module("engine.identity.regions")
    specs = [standin.IdentitySpec(latent_in(p.identity.latent), p.strength, p.region) for p in both.people]
    by_engine = standin.apply_standin(multi["model"], multi["adapter"], specs)
    assert torch.equal(sample(by_node, multi), sample(by_engine, multi))
    assert isinstance(both.people[0].region, regions.Region)

    with pytest.raises(ValueError, match="'identities' input"):
        add.execute(both, "whole frame", 1.0)
    with pytest.raises(ValueError, match="another Add Identity"):
        add.execute(person(a), "whole frame", 1.0, identities=person(b))
    with pytest.raises(ValueError, match="empty"):
        add.execute(person(a), "left half", 1.0, region_mask=torch.zeros(5, 16, 16))
    whole = add.execute(person(a), "whole frame", 1.0).args[0]
    assert whole.people[0].region is None
