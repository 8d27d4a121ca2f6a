#!/usr/bin/env python3
"""Apply Stand-In Identity (Raylight)'s actor side inside Raylight's own sequence-parallel Wan
code, on CPU processes joined by gloo (developer check; Raylight's actors need CUDA and NCCL).

    python dev/check_raylight.py RAYLIGHT_DIR [FIXTURE_DIR] [--ulysses N] [--ring M]
    python dev/check_raylight.py RAYLIGHT_DIR --fsdp

RAYLIGHT_DIR is a checkout of github.com/komikndr/raylight (the folder holding src/raylight).
What runs per rank, all Raylight's or ComfyUI's own code except where said:

* ``import raylight`` (its xfuser shim), Raylight's ``initialize_xfuser_parallel`` (xfuser's
  process groups), its attention settings (``set_attn_type``), its ``USPInjectRegistry.inject``
  registered as the ON_LOAD callback exactly as ``RayWorker.patch_usp`` does it;
* the function Apply Stand-In Identity (Raylight) sends to ``RayWorker.model_function_runner``
  (engine/identity/actor_entry.py), called as that method calls it: ``model = fn(model, ...)``;
* the fixture's calls inside a real ComfyUI sampling run: ComfyUI loads the model, the ON_LOAD
  callback swaps in Raylight's ``usp_dit_forward`` / ``usp_self_attn_forward`` /
  ``usp_t2v_cross_attn_forward``, the pack's wrapper joins the reference;
* then the model is unloaded and the calls run again: the load runs ON_LOAD again, Raylight
  re-injects its forwards over the pack's, and the pack's wrapper puts its own back.

Not Raylight's: Ray itself (the actors are these processes), CUDA/NCCL (gloo on CPU, so xfuser's
device helpers are pointed at cpu/gloo) and the attention kernel (TORCH_MATH, whose zero
log-sum-exp is replaced by the true one so that ring attention merges correctly; as in
tests/sp_harness.py). Prints one line per configuration and exits 0 when all are within 1e-4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, "tests")
TOLERANCE = 1e-4


def prepare(raylight_dir: str, folder: str) -> dict:
    import torch
    torch.set_num_threads(1)
    sys.path[:0] = [HERE, TESTS, os.path.join(raylight_dir, "src")]
    import comfyhost
    comfyhost.setup_comfy(cpu=True)
    import safetensors.torch
    import comfy.sd
    import check_sequence_parallel as csp
    import sp_harness

    original = torch.cuda.is_available
    torch.cuda.is_available = lambda: True        # xfuser defines its attention classes only then
    try:
        import raylight  # noqa: F401  (installs Raylight's minimal xfuser)
        import raylight.distributed_modules.attention as xfuser_attn
    finally:
        torch.cuda.is_available = original
    envs = sys.modules["xfuser.envs"]
    envs.get_device = lambda local_rank: torch.device("cpu")
    envs.get_device_name = lambda: "cpu"
    envs.get_torch_distributed_backend = lambda: "gloo"
    ring = sys.modules["xfuser.core.long_ctx_attention.ring.ring_flash_attn"]
    ring.select_flash_attn_impl = lambda *a, **k: sp_harness.math_attention_with_lse
    xfuser_attn.set_attn_type("TORCH_MATH")
    xfuser_attn.set_sync_ulysses(False)

    pack = comfyhost.load_pack()
    from importlib import import_module
    standin = import_module(pack.__name__ + ".engine.identity.patch")
    adapter_mod = import_module(pack.__name__ + ".engine.identity.adapter")
    node = import_module(pack.__name__ + ".nodes.apply_identity_raylight")

    with open(os.path.join(folder, "calls.json")) as f:
        spec = json.load(f)
    inputs = safetensors.torch.load_file(os.path.join(folder, spec["inputs"]))
    model = comfy.sd.load_diffusion_model(os.path.join(folder, spec["model"]),
                                          model_options={"dtype": torch.float32})
    reference = inputs[spec["reference"]]
    adapter_path = os.path.join(folder, spec["adapters"][-1])
    single = standin.apply_standin(model, adapter_mod.load_adapter_file(adapter_path), reference)
    want = csp._run_calls(standin, single, spec, inputs, True)
    return {"csp": csp, "standin": standin, "adapter_mod": adapter_mod, "node": node, "spec": spec, "inputs": inputs,
            "model": model, "want": want, "adapter_path": adapter_path,
            # the node sends the raw VAE latent; the actor applies the model's process_latent_in
            "latent": model.model.process_latent_out(reference.clone())}


def worker(rank, world, init_file, configs, out_path, p):
    import torch.distributed as dist
    import comfy.patcher_extension as pe
    from raylight.distributed_modules.usp import USPInjectRegistry
    from raylight.distributed_worker.parallel_group_manager import initialize_xfuser_parallel
    actor_entry = sys.modules[p["node"].__name__.rsplit(".", 2)[0] + ".engine.identity.actor_entry"]

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    import inspect
    import raylight.distributed_worker.parallel_group_manager as pgm
    if "fs" in inspect.signature(pgm.RankGenerator.__init__).parameters:
        # xfuser 0.7.0 added a sixth degree ("fs") before "order"; Raylight (c049571) passes five.
        # Only Raylight's bookkeeping object after the groups exist; give it fs=1.
        real = pgm.RankGenerator
        pgm.RankGenerator = lambda tp, sp, pp, cfg, dp, order: real(tp, sp, pp, cfg, dp, 1, order)
    results = []
    (ulysses, ring), = configs
    initialize_xfuser_parallel(rank, world, {"is_xdit": True, "attention": "TORCH_MATH",
                                             "sync_ulysses": False, "ulysses_degree": ulysses,
                                             "ring_degree": ring, "cfg_degree": 1})
    model = p["model"].clone()
    model.add_callback(pe.CallbacksMP.ON_LOAD, USPInjectRegistry.inject)   # RayWorker.patch_usp
    kwargs = {"adapter_path": p["adapter_path"], "latent": p["latent"], "strength": 1.0}
    model = actor_entry.run(model, p["node"].PACK_DIR, "apply_on_actor", kwargs)  # model_function_runner
    dm = model.model.diffusion_model
    import comfy.model_management
    for round_ in ("first load", "reload (Raylight re-injects)"):
        # A fresh actor loads the model at its first sampling; a reload runs ON_LOAD again, and
        # Raylight's new forwards replace the pack's, which its wrapper puts back.
        comfy.model_management.unload_all_models()
        got = p["csp"]._run_calls(p["standin"], model, p["spec"], p["inputs"], True)
        forwards = sorted({type(b.self_attn.forward).__name__ + ":" + getattr(
            getattr(b.self_attn.forward, "inner", None), "__name__", "-") for b in dm.blocks})
        diffs = [float((g - w).abs().max()) for g, w in zip(got, p["want"])]
        ids = [id(b.self_attn.forward) for b in dm.blocks]
        fresh = not results or not set(ids) & set(results[-1]["ids"])
        results.append({"round": round_, "ulysses": ulysses, "ring": ring, "max_abs": max(diffs),
                        "ids": ids, "fresh": fresh,
                        "forward_orig": dm.forward_orig.__func__.__name__, "self_attn": forwards})
    try:
        actor_entry.run(model, p["node"].PACK_DIR, "apply_on_actor", dict(kwargs, strength=0.5))
        refused = None
    except ValueError as e:
        refused = str(e)
    results.append({"strength_0.5": refused})
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


def fsdp_worker(rank, world, init_file, out_path, p):
    """Raylight's own FSDP sharding (fully_shard_bottom_up) of the model, then what Stand-In
    meets there: is block.modulation sharded, does the reference pass run, what the node says."""
    import importlib.util
    import types
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:   # what Raylight's fsdp_utils imports from a newer ComfyUI, else from comfy_kitchen
        from comfy.quant_ops import QUANT_ALGOS, QuantizedTensor, get_layout_class  # noqa: F401
    except ImportError:
        kitchen = types.ModuleType("comfy_kitchen.tensor")
        kitchen.QuantizedTensor = type("QuantizedTensor", (torch.Tensor,), {})
        kitchen.get_layout_class = lambda *a, **k: None
        sys.modules["comfy_kitchen"] = types.ModuleType("comfy_kitchen")
        sys.modules["comfy_kitchen.tensor"] = kitchen
    import raylight
    path = os.path.join(os.path.dirname(raylight.__file__), "comfy_dist", "fsdp_utils.py")
    spec = importlib.util.spec_from_file_location("raylight_fsdp_utils", path)
    fsdp_utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fsdp_utils)     # alone: raylight.comfy_dist's __init__ needs a CUDA setup
    model = p["model"].clone()
    dm = model.model.diffusion_model
    units = fsdp_utils.fully_shard_bottom_up(dm, {"reshard_after_forward": True,
                                                  "mesh": init_device_mesh("cpu", (world,))},
                                             native_ignore_scale=True)
    out = {"units": units, "modulation": type(dm.blocks[0].modulation).__name__,
           "q_weight": type(dm.blocks[0].self_attn.q.weight).__name__}
    adapter = p["adapter_mod"].load_adapter_file(p["adapter_path"])
    try:
        p["standin"].build_reference_kv(dm, adapter, model.model.process_latent_in(p["latent"]),
                                        (6, 8), torch.float32, torch.device("cpu"))
        out["reference_pass"] = "ran"
    except Exception as e:
        out["reference_pass"] = f"{type(e).__name__}: {str(e)[:90]}"
    actor_entry = sys.modules[p["node"].__name__.rsplit(".", 2)[0] + ".engine.identity.actor_entry"]
    out["node_check"] = actor_entry.run(model, p["node"].PACK_DIR, "check_on_actor", {})
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raylight_dir")
    parser.add_argument("folder", nargs="?", default=os.path.join(TESTS, "fixtures", "standin_parity"))
    parser.add_argument("--ulysses", type=int, default=None)
    parser.add_argument("--ring", type=int, default=None)
    parser.add_argument("--fsdp", action="store_true",
                        help="instead: shard the model with Raylight's FSDP on 2 processes and report "
                             "what Stand-In meets there")
    args = parser.parse_args(argv)
    configs = ([(2, 1), (1, 2)] if args.ulysses is None and args.ring is None
               else [(args.ulysses or 1, args.ring or 1)])
    p = prepare(os.path.abspath(args.raylight_dir), os.path.abspath(args.folder))
    import multiprocessing as mp
    if args.fsdp:
        with tempfile.TemporaryDirectory(prefix="standin_raylight_") as tmp:
            out_path = os.path.join(tmp, "fsdp.json")
            procs = [mp.get_context("fork").Process(
                target=fsdp_worker, args=(r, 2, os.path.join(tmp, "rdv"), out_path, p)) for r in range(2)]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            if not os.path.exists(out_path):
                print("raylight fsdp: processes failed", flush=True)
                return 1
            out = json.load(open(out_path))
        print(f"raylight fsdp: {out['units']} FSDP units; block.modulation is a {out['modulation']}, "
              f"self_attn.q.weight a {out['q_weight']}; the reference pass: {out['reference_pass']}; "
              f"the node's check: {out['node_check'] or 'accepts'}", flush=True)
        return 0 if out["node_check"] else 1
    ok = True
    for ulysses, ring in configs:
        world = ulysses * ring
        with tempfile.TemporaryDirectory(prefix="standin_raylight_") as tmp:
            out_path = os.path.join(tmp, "results.json")
            procs = [mp.get_context("fork").Process(
                target=worker, args=(r, world, os.path.join(tmp, "rdv"), [(ulysses, ring)], out_path, p))
                for r in range(world)]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            if any(proc.exitcode for proc in procs) or not os.path.exists(out_path):
                print(f"raylight ulysses={ulysses} ring={ring}: processes failed", flush=True)
                ok = False
                continue
            results = json.load(open(out_path))
        for r in results:
            if "strength_0.5" in r:
                refused = r["strength_0.5"]
                ok &= bool(refused)
                print(f"raylight ulysses={ulysses} ring={ring} strength=0.5: "
                      f"{'refused: ' + refused[:70] + '...' if refused else 'NOT refused'}", flush=True)
                continue
            status = "ok" if r["max_abs"] <= TOLERANCE else "FAIL"
            ok &= status == "ok"
            print(f"raylight ulysses={ulysses} ring={ring} {r['round']}: max_abs={r['max_abs']:.3g} "
                  f"forward_orig={r['forward_orig']} self_attn={','.join(r['self_attn'])} "
                  f"{'(new wrappers)' if r['fresh'] else '(SAME wrappers)'} {status}",
                  flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
