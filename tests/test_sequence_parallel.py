"""Stand-In under xDiT sequence parallelism (Raylight): the engine on 2 gloo CPU processes, the
actor-side entry as Ray would ship it, and the Apply Stand-In Identity (Raylight) node."""

import json
import os
import re
import subprocess
import sys
import types

import pytest
import torch

import folder_paths

import conftest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHECK = os.path.join(HERE, "check_sequence_parallel.py")


def sp():
    return conftest.pack_module("engine.identity.sequence_parallel")


def run_check(*args, timeout=300):
    return subprocess.run([sys.executable, CHECK, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("fixture", ["standin_parity", "standin_multi"])
def test_two_gloo_processes_ulysses_and_ring_equal_one_process(fixture):
    """The pack's real patch through xfuser's Ulysses 2 and ring 2 attention equals the one-process
    output, for one person and for two (the official multi baseline's fixture); the wrong way
    (reference appended to each rank's keys) is told apart."""
    fixture_dir = os.path.join(conftest.FIXTURES, fixture)
    result = run_check(fixture_dir, "--control")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    spec = json.load(open(os.path.join(fixture_dir, "calls.json")))
    lines = re.findall(r"^sp .* (\S+) ulysses=(\d) ring=(\d): max_abs=(\S+) (ok|FAIL)$", result.stdout, re.M)
    assert sorted((a, u, r) for a, u, r, _, _ in lines) == sorted(
        (a, u, r) for a in spec["adapters"] for u, r in (("2", "1"), ("1", "2")))
    assert all(float(m) <= 1e-4 and s == "ok" for *_, m, s in lines)
    controls = re.findall(r"^control .* append-locally: max_abs=(\S+) told apart$", result.stdout, re.M)
    assert len(controls) == len(lines) and all(float(m) > 1e-2 for m in controls)


def test_a_ulysses_degree_that_does_not_divide_the_heads_is_refused(fixture_dir):
    result = run_check(fixture_dir, "--ulysses", "4", timeout=120)
    assert result.returncode == 2
    assert "2 attention heads" in result.stderr and "Ulysses degree 4" in result.stderr
    assert "sp " not in result.stdout


def test_the_engine_modules_import_without_comfyui_or_xfuser():
    code = ("import sys; import engine.identity.sequence_parallel, engine.identity.actor_entry; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'xfuser', 'yunchang', 'ray')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reference_cache_size_formula_matches_a_built_cache(base, adapter, inputs, standin):
    dm = base.model.diffusion_model
    ref = base.model.process_latent_in(inputs["ip_latent"])
    kv = standin.build_reference_kv(dm, adapter, ref, (6, 8), torch.float32, torch.device("cpu"))
    assert kv.nbytes == sp().reference_cache_bytes(len(dm.blocks), dm.dim, kv.tokens, 4)


# --------------------------------------------------------------------------------------
# Installing over Raylight's forwards
# --------------------------------------------------------------------------------------

def usp_self_attn_forward(self, x, freqs, transformer_options={}, **kwargs):
    return "raylight"


def other_forward(self, x, freqs, transformer_options={}, **kwargs):
    return "other"


def fake_model(n=2):
    blocks = [types.SimpleNamespace(self_attn=torch.nn.Linear(1, 1)) for _ in range(n)]
    return types.SimpleNamespace(blocks=blocks)


def raylight_injects(dm, fn=usp_self_attn_forward):
    for block in dm.blocks:
        block.self_attn.forward = types.MethodType(fn, block.self_attn)


def test_install_wraps_raylights_forward_and_follows_its_reinjection():
    mod = sp()
    dm = fake_model()
    made = []
    factory = lambda: made.append(object()) or made[-1]  # noqa: E731
    assert mod.install_on_blocks(dm, factory) == 0        # no sequence parallelism: left alone
    raylight_injects(dm)
    assert mod.install_on_blocks(dm, factory) == 2
    assert mod.install_on_blocks(dm, factory) == 0        # idempotent
    wrapped = dm.blocks[0].self_attn.forward
    assert isinstance(wrapped, mod.SelfAttentionForward) and wrapped.attention is made[0]
    # Without a Stand-In call, Raylight's own forward runs.
    assert wrapped(torch.zeros(1), None, transformer_options={}) == "raylight"
    raylight_injects(dm)                                  # ON_LOAD on the next model load
    assert mod.install_on_blocks(dm, factory) == 2
    raylight_injects(dm, other_forward)
    with pytest.raises(mod.SequenceParallelError, match="other_forward"):
        mod.install_on_blocks(dm, factory)


def test_strength_other_than_0_and_1_is_refused_under_sequence_parallelism(standin):
    mod = sp()
    for s in (0.0, 1.0):
        mod.check_strength(s)
    with pytest.raises(mod.SequenceParallelError, match="strength 0.5"):
        mod.check_strength(0.5)

    class Call:
        pending, key_bias, attention_calls, blocks_used = 0, -0.69, 0, set()

    with pytest.raises(mod.SequenceParallelError, match="not available under Raylight"):
        mod.take_block_reference({standin.CALL_KEY: Call()})


# --------------------------------------------------------------------------------------
# The actor side, shipped as Ray ships it
# --------------------------------------------------------------------------------------

ACTOR_SCRIPT = r"""
import json, pickle, sys
sys.path.insert(0, sys.argv[2])
import comfyhost
comfyhost.setup_comfy(cpu=True)
import torch, comfy.sd, comfy.patcher_extension as pe
assert not [m for m in sys.modules if m.startswith("comfyui_standin") or m.startswith("engine")]
model = comfy.sd.load_diffusion_model(sys.argv[3], model_options={"dtype": torch.float32})
out = {}
with open(sys.argv[1], "rb") as f:
    calls = pickle.load(f)
fn, args = calls["check"]
out["check_none"] = fn(None, *args)
out["check_model"] = fn(model, *args)
fn, args = calls["apply"]
patched = fn(model, *args)
out["same_model"] = patched is model
out["apply_model"] = list(patched.wrappers.get(pe.WrappersMP.APPLY_MODEL, {}))
out["diffusion_model"] = list(patched.wrappers.get(pe.WrappersMP.DIFFUSION_MODEL, {}))
out["blocks"] = len([k for k in patched.model_options["transformer_options"]["patches_replace"]["dit"]])
print(json.dumps(out))
"""


def test_the_actor_entry_runs_in_a_process_that_cannot_import_the_pack(tmp_path, fixture_dir, inputs):
    """What the node sends to Raylight's model_function_runner, pickled as Ray pickles it
    (cloudpickle, the entry by value), runs where the pack was never imported."""
    import cloudpickle
    entry = conftest.pack_module("engine.identity.actor_entry")
    node = conftest.pack_module("nodes.apply_identity_raylight")
    cloudpickle.register_pickle_by_value(entry)
    try:
        blob = cloudpickle.dumps({
            "check": (entry.run, (node.PACK_DIR, "check_on_actor", {"num_blocks": 2, "dim": 256})),
            "apply": (entry.run, (node.PACK_DIR, "apply_on_actor", {
                "adapter_path": os.path.join(fixture_dir, "standin_adapter.safetensors"),
                "latent": inputs["ip_latent"], "strength": 1.0})),
        })
    finally:
        cloudpickle.unregister_pickle_by_value(entry)
    path = tmp_path / "calls.pkl"
    path.write_bytes(blob)
    script = tmp_path / "actor.py"
    script.write_text(ACTOR_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(path), os.path.join(ROOT, "dev"),
                             os.path.join(fixture_dir, "model.safetensors")],
                            capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "hold no model" in out["check_none"]
    assert out["check_model"] is None
    assert out["same_model"] is False
    assert "standin" in out["apply_model"] and "standin_sequence_parallel" in out["diffusion_model"]
    assert out["blocks"] == 2


# --------------------------------------------------------------------------------------
# The node, with actors in this process
# --------------------------------------------------------------------------------------

class Remote:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


class FakeActor:
    """Raylight's RayWorker, as far as patch nodes reach it."""

    def __init__(self, model):
        self.model = model
        self.calls = 0
        self.model_function_runner = Remote(self._run)
        self.model_function_runner_get_values = Remote(self._get)

    def _run(self, fn, *args, **kwargs):
        self.calls += 1
        self.model = fn(self.model, *args, **kwargs)

    def _get(self, fn, *args, **kwargs):
        self.calls += 1
        return fn(self.model, *args, **kwargs)


@pytest.fixture
def fake_ray(monkeypatch):
    import cloudpickle
    ray = types.ModuleType("ray")
    ray.is_initialized = lambda: True
    ray.get = lambda x: x
    ray.cloudpickle = cloudpickle
    monkeypatch.setitem(sys.modules, "ray", ray)
    yield ray
    entry = conftest.pack_module("engine.identity.actor_entry")
    if entry.__name__ in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.unregister_pickle_by_value(entry)


@pytest.fixture
def node_inputs(base, adapter, inputs):
    sockets = conftest.pack_module("nodes.sockets")
    identity = sockets.Identity(latent=inputs["ip_latent"], image=torch.zeros(1, 8, 8, 3),
                                vae_kind="wan21", latent_channels=16)
    return sockets.IdentityAdapter("standin_adapter.safetensors", adapter, None), identity


def node():
    return conftest.pack_module("nodes.apply_identity_raylight").ApplyIdentityRaylight


def test_the_node_patches_the_model_on_every_actor(fake_ray, base, node_inputs):
    import comfy.patcher_extension as pe
    actors = [FakeActor(base.clone()), FakeActor(base.clone())]
    before = [a.model for a in actors]
    ray_actors = {"workers": actors}
    out = node().execute(ray_actors, *node_inputs, strength=1.0, start_percent=0.0, end_percent=0.5)
    assert out.args[0] is ray_actors
    for actor, old in zip(actors, before):
        assert actor.model is not old                     # a clone; the actor's old model is untouched
        assert not old.get_wrappers(pe.WrappersMP.DIFFUSION_MODEL, "standin_sequence_parallel")
        assert actor.model.get_wrappers(pe.WrappersMP.DIFFUSION_MODEL, "standin_sequence_parallel")
        assert actor.model.get_wrappers(pe.WrappersMP.APPLY_MODEL, "standin")
    assert [a.calls for a in actors] == [2, 1]            # the check on rank 0, the patch on each


def test_the_node_refuses_before_anything_reaches_the_actors(fake_ray, base, node_inputs, monkeypatch):
    actors = [FakeActor(base.clone())]
    cls = node()
    assert "not available under Raylight" in cls.validate_inputs(strength=0.5)
    assert cls.validate_inputs(strength=None) is True      # a link: checked at execute
    with pytest.raises(ValueError, match="not available under Raylight"):
        cls.execute({"workers": actors}, *node_inputs, strength=0.5)
    with pytest.raises(ValueError, match="no Ray workers"):
        cls.execute({"workers": []}, *node_inputs)
    several = types.SimpleNamespace(people=(node_inputs[1], node_inputs[1]), consent=None)
    with pytest.raises(ValueError, match="takes one person"):
        cls.execute({"workers": actors}, node_inputs[0], several)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ValueError, match="needs Raylight"):
        cls.execute({"workers": actors}, *node_inputs)
    assert actors[0].calls == 0


def test_the_node_explains_an_actor_model_it_cannot_patch(fake_ray, base, node_inputs, adapter_mod):
    import wan_tiny
    sockets = conftest.pack_module("nodes.sockets")
    _, identity = node_inputs
    actors = [FakeActor(None), FakeActor(None)]
    with pytest.raises(ValueError, match="hold no model yet"):
        node().execute({"workers": actors}, *node_inputs)
    three_blocks = adapter_mod.StandInAdapter.from_state_dict(wan_tiny.random_adapter_sd(3, 256, rank=4))
    actors = [FakeActor(base.clone()), FakeActor(base.clone())]
    with pytest.raises(ValueError, match="made for a Wan model with 3 blocks"):
        node().execute({"workers": actors}, sockets.IdentityAdapter("other.safetensors", three_blocks, None),
                       identity)
    assert [a.calls for a in actors] == [1, 0]


def test_the_node_follows_the_consent_policy(fake_ray, base, node_inputs, tmp_path, monkeypatch):
    user = tmp_path / "user"
    (user / "__standin").mkdir(parents=True)
    (user / "__standin" / "policy.json").write_text(json.dumps({"require_consent": True}))
    monkeypatch.setattr(folder_paths, "user_directory", str(user))
    actors = [FakeActor(base.clone())]
    with pytest.raises(ValueError, match="(?i)consent"):
        node().execute({"workers": actors}, *node_inputs)
    assert actors[0].calls == 0
