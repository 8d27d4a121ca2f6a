"""The video runs ComfyUI's own Wan block: whatever other nodes patch into it still acts under
Stand-In, in either order of application; the identity enters only at self-attention."""

import gc
import inspect
import logging

import pytest
import torch

import comfy.ldm.modules.attention as comfy_attention
import comfy.ldm.wan.model as wan_model
import comfy.model_management
import comfy.model_sampling
import comfy.samplers

import wan_tiny

VIDEO_TOKENS = 3 * 6 * 8     # the fixture latent 3x12x16 -> 3x6x8 patches
REF_TOKENS = 16              # the fixture reference 8x8 -> 4x4 patches


def sample(model, inputs, **kwargs):
    kwargs = {"seed": 1, "steps": 2, **kwargs}
    return wan_tiny.sample(model, inputs["context_pos"], inputs["context_neg"], **kwargs)


def differ(a, b, by=1e-3):
    return float((a - b).abs().max()) > by


def enhance_like_object_patch(model, index, calls):
    """What KJNodes' Enhance-A-Video does: an object patch on a block's self_attn.forward that
    calls the original forward and rescales its output."""
    self_attn = model.get_model_object(f"diffusion_model.blocks.{index}.self_attn")
    # The class's forward: the module is shared, and an earlier object patch may still sit on it.
    original = type(self_attn).forward.__get__(self_attn)

    def forward(x, freqs, transformer_options={}):
        calls.append(index)
        return original(x, freqs, transformer_options=transformer_options) * 1.5

    patched = model.clone()
    patched.add_object_patch(f"diffusion_model.blocks.{index}.self_attn.forward", forward)
    return patched


@pytest.mark.parametrize("index", [0, 1])
def test_object_patch_on_self_attention_acts_under_standin_in_either_order(base, inputs, adapter, standin, index):
    alone_calls, before_calls, after_calls = [], [], []
    standin_alone = sample(standin.apply_standin(base, adapter, inputs["ip_latent"]), inputs)
    enhance_alone = sample(enhance_like_object_patch(base, index, alone_calls), inputs)
    before = sample(standin.apply_standin(enhance_like_object_patch(base, index, before_calls), adapter, inputs["ip_latent"]), inputs)
    after = sample(enhance_like_object_patch(standin.apply_standin(base, adapter, inputs["ip_latent"]), index, after_calls), inputs)
    assert len(alone_calls) >= 2 and len(before_calls) == len(after_calls) == len(alone_calls)
    assert torch.equal(before, after)
    assert differ(before, standin_alone), "the object patch was dropped under Stand-In"
    assert differ(before, enhance_alone), "the identity was dropped under the object patch"


def other_nodes_override(seen):
    """An optimized_attention_override as another node sets it: it sees every call and
    changes the result of the self-attention ones."""
    def override(func, q, k, v, heads, *args, **kwargs):
        seen.append(k.shape[1])
        out = func(q, k, v, heads, *args, **kwargs)
        return out * 0.8 if k.shape[1] != 8 else out  # not the cross-attention (8 text tokens)
    return override


def with_override(model, seen):
    m = model.clone()
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = other_nodes_override(seen)
    return m


def test_attention_override_from_another_node_is_chained_in_either_order(base, inputs, adapter, standin):
    blocks = len(base.model.diffusion_model.blocks)
    standin_alone = sample(standin.apply_standin(base, adapter, inputs["ip_latent"]), inputs)
    seen_plain, seen_before, seen_after = [], [], []
    override_alone = sample(with_override(base, seen_plain), inputs)
    before = sample(standin.apply_standin(with_override(base, seen_before), adapter, inputs["ip_latent"]), inputs)
    after = sample(with_override(standin.apply_standin(base, adapter, inputs["ip_latent"]), seen_after), inputs)
    assert torch.equal(before, after)
    assert differ(before, standin_alone) and differ(before, override_alone)
    # The other override still sees every call; the self-attention ones now carry the
    # reference keys (Stand-In joins them before handing the call on). It also serves the
    # reference pass (reference tokens only, once per generation; the last block's is unused).
    assert seen_before == seen_after
    assert seen_before.count(REF_TOKENS) == blocks - 1
    assert len(seen_before) - (blocks - 1) == len(seen_plain) > 0
    self_attention = seen_plain.count(VIDEO_TOKENS)
    assert self_attention >= 2 * blocks and seen_plain.count(8) == self_attention
    assert seen_before.count(VIDEO_TOKENS + REF_TOKENS) == self_attention
    assert seen_before.count(VIDEO_TOKENS) == 0


WAN_RUNS_ATTN_PATCHES = "attn1_patch" in inspect.getsource(wan_model.WanSelfAttention.forward)


@pytest.mark.skipif(not WAN_RUNS_ATTN_PATCHES, reason="this ComfyUI's Wan block runs no attn1/attn2 patches (they came in 0.11)")
def test_attn1_and_attn2_patches_act_under_standin(base, inputs, adapter, standin):
    calls = {"attn1": 0, "attn2": 0}

    def attn1(args):
        calls["attn1"] += 1
        return args["x"] * 1.25

    def attn2(args):
        calls["attn2"] += 1
        return args["x"] + 0.05

    def patched(model):
        m = model.clone()
        m.set_model_attn1_patch(attn1)
        m.set_model_attn2_patch(attn2)
        return m

    blocks = len(base.model.diffusion_model.blocks)
    standin_alone = sample(standin.apply_standin(base, adapter, inputs["ip_latent"]), inputs)
    plain_patched = sample(patched(base), inputs)
    before = sample(standin.apply_standin(patched(base), adapter, inputs["ip_latent"]), inputs)
    after = sample(patched(standin.apply_standin(base, adapter, inputs["ip_latent"])), inputs)
    assert calls["attn1"] == calls["attn2"] and calls["attn1"] % (3 * blocks) == 0 and calls["attn1"] > 0
    assert torch.equal(before, after)
    assert differ(before, standin_alone) and differ(before, plain_patched)


def test_reference_joins_only_the_self_attention_of_each_block(fixture_dir, base, inputs, adapter, standin):
    """Cross-attention, and the self-attention of VACE's own blocks, see no reference keys."""
    import os
    import safetensors.torch
    sd = safetensors.torch.load_file(os.path.join(fixture_dir, "model.safetensors"))
    vace = wan_tiny.load_state_dict_model(wan_tiny.vace_state_dict(sd, vace_layers=1))
    for model, vace_blocks in ((base, 0), (vace, 1)):
        seen = []
        sample(with_override(standin.apply_standin(model, adapter, inputs["ip_latent"]), seen), inputs,
               steps=1, cfg=1.0)
        blocks = len(model.model.diffusion_model.blocks)
        assert seen.count(VIDEO_TOKENS + REF_TOKENS) == blocks       # each main block's self-attention
        assert seen.count(VIDEO_TOKENS) == vace_blocks               # VACE's self-attention: untouched
        assert seen.count(8) == blocks + vace_blocks                 # every cross-attention: untouched
        assert seen.count(REF_TOKENS) == blocks - 1                  # the reference pass
        assert len(seen) == 2 * (blocks + vace_blocks) + blocks - 1


# ------------------------------------------------------------------------------------
# Warnings: only when the identity really was lost somewhere
# ------------------------------------------------------------------------------------

def standin_warnings(caplog):
    return [r for r in caplog.records if "Stand-In acted on" in r.getMessage()]


def test_cache_node_that_skips_calls_raises_no_block_warning(base, inputs, adapter, standin, caplog):
    from comfy_extras.nodes_easycache import EasyCacheNode
    forwards = []

    class CountBlock0:
        def __call__(self, args, extra):
            forwards.append(1)
            return extra["original_block"](args)

    counted = base.clone()
    counted.set_model_patch_replace(CountBlock0(), "dit", "double_block", 0)
    patched = standin.apply_standin(counted, adapter, inputs["ip_latent"])
    cached = EasyCacheNode.execute(patched, reuse_threshold=3.0, start_percent=0.0, end_percent=1.0,
                                   verbose=False)[0]
    steps = 8
    with caplog.at_level(logging.WARNING):
        out = sample(cached, inputs, steps=steps)
    assert len(forwards) < steps, "EasyCache skipped no call: the test shows nothing"
    assert standin_warnings(caplog) == []
    plain_cached = EasyCacheNode.execute(base, reuse_threshold=3.0, start_percent=0.0, end_percent=1.0,
                                         verbose=False)[0]
    assert differ(out, sample(plain_cached, inputs, steps=steps))  # the identity acted


def test_block_replaced_without_the_original_is_reported_once(base, inputs, adapter, standin, caplog):
    class Skip:
        def __call__(self, args, extra):
            return {"img": args["img"]}

    patched = standin.apply_standin(base, adapter, inputs["ip_latent"])
    patched.set_model_patch_replace(Skip(), "dit", "double_block", 1)   # after Apply: replaces ours
    with caplog.at_level(logging.WARNING):
        sample(patched, inputs, steps=3)
    warnings = standin_warnings(caplog)
    assert len(warnings) == 1
    assert "acted on 1 of 2 blocks" in warnings[0].getMessage()
    assert "without calling the original block" in warnings[0].getMessage()


# ------------------------------------------------------------------------------------
# The sigma window keeps its boundary steps
# ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [1.0, 5.0, 8.0])
def test_sigma_window_keeps_the_step_on_its_boundary(base, inputs, adapter, standin, shift):
    """A window whose start and end are the percent of one step's sigma holds exactly that
    step, although the sampler's sigmas are float32 and the window float64."""
    model = base.clone()
    ms = comfy.model_sampling.ModelSamplingDiscreteFlow.__new__(
        type("MS", (comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST), {}))
    comfy.model_sampling.ModelSamplingDiscreteFlow.__init__(ms)
    ms.set_parameters(shift=shift, multiplier=1000)
    model.add_object_patch("model_sampling", ms)
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", 20)[:-1]
    assert sigmas.dtype == torch.float32
    for k, sigma in enumerate(sigmas.tolist()):
        t = sigma / (shift - (shift - 1.0) * sigma)   # invert time_snr_shift
        percent = 1.0 - t
        patch = standin.StandInPatch(adapter, None, inputs["ip_latent"], start_percent=percent, end_percent=percent)
        run = standin.RunCache(patch, model, patch.sigma_window(model))
        active = [patch.active(s.reshape(1), run) for s in sigmas]
        assert active[k], f"shift {shift}: step {k} (sigma {sigma}) dropped from its own window"
        assert sum(active) == 1, f"shift {shift}: window of step {k} holds steps {[i for i, a in enumerate(active) if a]}"


# ------------------------------------------------------------------------------------
# torch.compile, memory manager
# ------------------------------------------------------------------------------------

def compiled_graphs(model, inputs, runs=2):
    """Sample through ComfyUI's own torch.compile wrapper (what TorchCompileModel installs),
    counting the graphs Dynamo hands the backend and the graph breaks."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    torch._dynamo.reset()
    counters.clear()
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    m = model.clone()
    set_torch_compile_wrapper(m, backend=counting_backend)
    outs = [sample(m, inputs, steps=3) for _ in range(runs)]
    result = {"graphs": len(graphs), "breaks": sum(counters["graph_break"].values()), "out": outs[-1]}
    torch._dynamo.reset()
    return result


def test_patched_model_compiles_into_as_many_graphs_as_the_plain_model(base, inputs, adapter, standin, monkeypatch):
    # On the CPU ComfyUI picks an attention that asks psutil for free memory at every call,
    # which breaks any graph; GPUs use PyTorch's SDPA, as here.
    monkeypatch.setattr(wan_model, "optimized_attention", comfy_attention.attention_pytorch)
    plain = compiled_graphs(base, inputs)
    patched_model = standin.apply_standin(base, adapter, inputs["ip_latent"])
    patched = compiled_graphs(patched_model, inputs)
    weaker = compiled_graphs(standin.apply_standin(base, adapter, inputs["ip_latent"], strength=0.5), inputs)
    assert plain["breaks"] == 0 and plain["graphs"] == 1
    assert (patched["graphs"], patched["breaks"]) == (plain["graphs"], plain["breaks"])
    assert (weaker["graphs"], weaker["breaks"]) == (plain["graphs"], plain["breaks"])
    eager = sample(patched_model, inputs, steps=3)
    torch.testing.assert_close(patched["out"], eager, atol=1e-5, rtol=1e-5)
    assert differ(patched["out"], plain["out"])


def test_applying_repeatedly_leaves_no_dead_adapter_patchers(base, inputs, adapter, standin, caplog):
    """In-process use (apply, sample, drop, again) used to give ComfyUI one adapter patcher per
    Apply, each dying while the adapter lived on: "memory leak with model StandInAdapter"."""
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            patched = standin.apply_standin(base, adapter, inputs["ip_latent"])
            sample(patched, inputs, steps=1)
            del patched
            gc.collect()
    assert not [r for r in caplog.records if "memory leak" in r.getMessage()]
    loaded = [m for m in comfy.model_management.current_loaded_models if m.real_model() is adapter]
    assert len(loaded) <= 1
    assert all(not m.is_dead() for m in comfy.model_management.current_loaded_models)


def test_moving_patches_for_another_device_changes_no_shared_patch(base, inputs, adapter, standin):
    """MultiGPU calls .to(device) on the patches of each device's clone; the clones share the
    patch objects, so a move must return a new object rather than change a shared one."""

    class DevicePatch:
        def __init__(self, device="cpu"):
            self.device = device

        def to(self, device):
            return self if device == self.device else DevicePatch(device)

        def __call__(self, args, extra):
            return extra["original_block"](args)

    chained = base.clone()
    chained.set_model_patch_replace(DevicePatch(), "dit", "double_block", 0)
    patched = standin.apply_standin(chained, adapter, inputs["ip_latent"])
    block_patch = patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)]
    moved = block_patch.to("cuda:1")
    assert moved is not block_patch and moved.prev.device == "cuda:1"
    assert block_patch.prev.device == "cpu"
    assert block_patch.to("cpu") is block_patch


def test_clones_sampling_at_once_in_threads_equal_each_run_alone(fixture_dir, base, inputs, adapter, standin, monkeypatch):
    """MultiGPU (ComfyUI 0.23+) gives each device a clone with its own copy of the model
    (deepclone_multigpu) and runs them in threads, all sharing the patch objects. Nothing of a
    run may live on those shared objects: two such clones sampling at the same time (different
    seeds and grids) give what each gives alone, and each run builds its reference K/V once."""
    import os
    import threading

    def device_clone(model):
        # What deepclone_multigpu does, minus the device: the loader builds the model again and
        # the clone of the patched model (its options, wrappers and patches) runs on that copy.
        clone = model.clone()
        clone.model = wan_tiny.load_model(os.path.join(fixture_dir, "model.safetensors")).model
        return clone

    patched = standin.apply_standin(base, adapter, inputs["ip_latent"])
    jobs = [dict(seed=21, latent_shape=(1, 16, 3, 12, 16)), dict(seed=22, latent_shape=(1, 16, 2, 8, 12))]
    clones = [device_clone(patched) for _ in jobs]
    alone = [sample(clone, inputs, **job) for clone, job in zip(clones, jobs)]

    builds = []
    build = standin.StandInPatch.build

    def counting_build(self, *args, **kwargs):
        builds.append(threading.get_ident())
        return build(self, *args, **kwargs)

    monkeypatch.setattr(standin.StandInPatch, "build", counting_build)
    results, errors = [None, None], []
    start = threading.Barrier(2)

    def run(i):
        try:
            start.wait()
            results[i] = sample(clones[i], inputs, **jobs[i])
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, alone):
        assert torch.equal(got, want)
    assert sorted(builds) == sorted(t.ident for t in threads)  # one build per run
    assert standin.find_standin(clones[0]) is standin.find_standin(clones[1])  # shared, as in MultiGPU
