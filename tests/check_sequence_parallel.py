#!/usr/bin/env python3
"""Stand-In under xDiT sequence parallelism (xfuser Ulysses x ring) against one process.

    python tests/check_sequence_parallel.py FIXTURE_DIR [--ulysses N] [--ring M]

For a parity fixture folder (see tests/fixtures/README.md) this starts ulysses x ring CPU
processes joined by gloo. Rank 0 first runs the fixture's call sequence on one process with the
pack's real patch (``apply_standin``); then every rank runs the same calls with the video tokens
split over the ranks, the self-attention going through xfuser's ``xFuserLongContextAttention``
and the reference joined there by ``engine/identity/sequence_parallel.py``. Per adapter file:

    sp <folder> <adapter file> ulysses=N ring=M: max_abs=<x> ok|FAIL

max_abs is the largest difference from the one-process output over every call of the sequence
(the identity's own calls and a call of the plain model); ok when it is at most 1e-4. Without
--ulysses / --ring both Ulysses 2 and ring 2 run. Exit status 0 only if every line says ok;
2 when the fixture cannot be split that way (Ulysses must divide the head count). With
--control, the wrong way (the reference appended to each rank's own keys) runs too and its
``control ...`` line must differ from one process by more than the tolerance.

Needs xfuser and yunchang (requirements-test.txt); see tests/sp_harness.py for what the test
processes change to run xfuser on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOLERANCE = 1e-4
HEAD_DIM = 128   # ComfyUI's Wan loader: num_heads = dim // 128


def fixture_heads(folder: str, spec: dict) -> int:
    from safetensors import safe_open
    with safe_open(os.path.join(folder, spec["model"]), "pt") as f:
        dim = f.get_slice("patch_embedding.weight").get_shape()[0]
    return dim // HEAD_DIM


def fixture_references(spec: dict, inputs: dict, standin=None):
    """One reference latent, or (fixtures with ``references``) the list the pack's
    ``apply_standin`` takes for several people, in the fixture's order."""
    if "references" not in spec:
        return inputs[spec["reference"]]
    refs = [inputs[n] for n in spec["references"]]
    spec_class = getattr(standin, "IdentitySpec", None)
    return [spec_class(r) for r in refs] if spec_class is not None else refs


def _run_calls(standin, patched, spec, inputs, with_identity: bool):
    """The fixture's calls inside one real ComfyUI sampling run (so the per-generation reference
    cache lives as under KSampler), each through BaseModel.apply_model with every wrapper; the
    DiT's raw outputs are recorded."""
    import torch
    from check_parity import diffusion_output, run_sequence_in_sampling_run

    outputs = []
    entries = spec["sequence"] if with_identity else spec.get("base", spec["sequence"][:1])

    def run_calls(guider, transformer_options):
        for entry in entries:
            x, ctx = inputs[entry["latents"]], inputs[entry["context"]]
            sigma = torch.full((x.shape[0],), float(entry["timestep"]) / 1000.0)
            out = diffusion_output(guider.inner_model, x, sigma, ctx, transformer_options)
            outputs.append(out.detach().clone())

    run_sequence_in_sampling_run(patched, run_calls)
    return outputs


def prepare(folder: str) -> dict:
    """Everything the ranks share, loaded once: ComfyUI, the pack, xfuser's attention, the
    fixture, and the one-process outputs (the processes are forked from here where the system
    allows, so nothing is imported twice)."""
    import torch
    torch.set_num_threads(1)
    sys.path[:0] = [HERE, os.path.join(ROOT, "dev")]
    import comfyhost
    comfyhost.setup_comfy(cpu=True)
    import safetensors.torch
    import comfy.sd
    import sp_harness
    from importlib import import_module

    pack = comfyhost.load_pack()
    p = {
        "harness": sp_harness,
        "adapter_mod": import_module(pack.__name__ + ".engine.identity.adapter"),
        "standin": import_module(pack.__name__ + ".engine.identity.patch"),
        "sp_module": import_module(pack.__name__ + ".engine.identity.sequence_parallel"),
        "attention_class": sp_harness.load_xfuser_attention(),
    }
    with open(os.path.join(folder, "calls.json")) as f:
        p["spec"] = spec = json.load(f)
    p["inputs"] = inputs = safetensors.torch.load_file(os.path.join(folder, spec["inputs"]))
    p["model"] = model = comfy.sd.load_diffusion_model(os.path.join(folder, spec["model"]),
                                                       model_options={"dtype": torch.float32})
    p["reference"] = fixture_references(spec, inputs, p["standin"])
    p["adapters"] = []
    standin = p["standin"]
    want_base = _run_calls(standin, model, spec, inputs, False)
    for adapter_file in spec["adapters"]:
        adapter = p["adapter_mod"].load_adapter_file(os.path.join(folder, adapter_file))
        entry = {"file": adapter_file, "adapter": adapter}
        try:
            single = standin.apply_standin(model, adapter, p["reference"])
        except standin.StandInError as e:
            entry["error"] = str(e)
        else:
            entry["want"] = _run_calls(standin, single, spec, inputs, True) + want_base
        p["adapters"].append(entry)
    return p


def worker(rank: int, world: int, init_file: str, folder: str, configs: list, out_path: str,
           control: bool = False, prepared: dict | None = None):
    import torch
    import torch.distributed as dist
    p = prepared or prepare(folder)
    harness, standin, spec, inputs = p["harness"], p["standin"], p["spec"], p["inputs"]
    model, reference = p["model"], p["reference"]
    dm = model.model.diffusion_model
    harness.init_sequence_parallel(rank, world, init_file)

    results = []
    for entry in p["adapters"]:
        if "error" in entry:
            results.append({"adapter": entry["file"], "error": entry["error"]})
            continue
        want = entry["want"]
        for ulysses, ring in configs:
            harness.set_degrees(ulysses, ring)
            attention = harness.make_attention(p["attention_class"])
            modes = [("joint", None)]
            if control:
                modes.append(("append-locally", harness.append_locally_forward(p["sp_module"])))
            for mode, forward_class in modes:
                sp_model = harness.make_sequence_parallel(model, attention, p["sp_module"], forward_class)
                try:
                    patched = standin.apply_standin(sp_model, entry["adapter"], reference)
                    got = (_run_calls(standin, patched, spec, inputs, True)
                           + _run_calls(standin, sp_model, spec, inputs, False))
                finally:
                    for block in dm.blocks:
                        block.self_attn.__dict__.pop("forward", None)
                diffs = [float((g - w).abs().max()) for g, w in zip(got, want)]
                finite = all(bool(torch.isfinite(g).all()) for g in got)
                effect = float((want[0] - want[-1]).abs().max())
                results.append({"adapter": entry["file"], "ulysses": ulysses, "ring": ring, "mode": mode,
                                "max_abs": max(diffs) if finite and len(got) == len(want) else float("inf"),
                                "per_call": diffs, "identity_effect": effect})
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


def run_world(folder: str, world: int, configs: list, control: bool, prepared: dict | None) -> list:
    import multiprocessing as mp
    with tempfile.TemporaryDirectory(prefix="standin_sp_") as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        out_path = os.path.join(tmp, "results.json")
        ctx = mp.get_context("fork" if prepared is not None else "spawn")
        procs = [ctx.Process(target=worker, args=(r, world, init_file, folder, configs, out_path, control, prepared))
                 for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        codes = [p.exitcode for p in procs]
        if any(codes) or not os.path.exists(out_path):
            raise SystemExit(f"sequence-parallel processes failed (exit codes {codes})")
        with open(out_path) as f:
            return json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a parity fixture folder (calls.json, model, adapters, inputs)")
    parser.add_argument("--ulysses", type=int, default=None, help="Ulysses degree (default: 2, then 1)")
    parser.add_argument("--ring", type=int, default=None, help="ring degree (default: 1, then 2)")
    parser.add_argument("--control", action="store_true",
                        help="also run the wrong way (the reference appended to each rank's own keys) "
                             "and print a 'control' line: it must differ by more than the tolerance")
    parser.add_argument("-v", "--verbose", action="store_true", help="per-call differences")
    args = parser.parse_args(argv)

    folder = os.path.abspath(args.folder)
    with open(os.path.join(folder, "calls.json")) as f:
        spec = json.load(f)
    if args.ulysses is None and args.ring is None:
        configs = [(2, 1), (1, 2)]
    else:
        configs = [(args.ulysses or 1, args.ring or 1)]
    heads = fixture_heads(folder, spec)
    for ulysses, ring in configs:
        if ulysses < 1 or ring < 1:
            print(f"Ulysses and ring degrees must be at least 1 (got {ulysses} and {ring}).", file=sys.stderr)
            return 2
        if heads % ulysses:
            print(f"{folder}: the model has {heads} attention heads, which Ulysses degree {ulysses} "
                  f"does not divide (each rank takes whole heads); use --ulysses with a divisor of "
                  f"{heads} and --ring for the rest.", file=sys.stderr)
            return 2

    ok = True
    by_world: dict[int, list] = {}
    for ulysses, ring in configs:
        by_world.setdefault(ulysses * ring, []).append((ulysses, ring))
    import multiprocessing as mp
    prepared = prepare(folder) if "fork" in mp.get_all_start_methods() else None
    for world, world_configs in by_world.items():
        for r in run_world(folder, world, world_configs, args.control, prepared):
            if "error" in r:
                ok = False
                print(f"sp {folder} {r['adapter']}: not run: {r['error']}", flush=True)
                continue
            if r["mode"] == "append-locally":
                told_apart = r["max_abs"] > TOLERANCE
                ok &= told_apart
                print(f"control {folder} {r['adapter']} ulysses={r['ulysses']} ring={r['ring']} "
                      f"append-locally: max_abs={r['max_abs']:.3g} "
                      f"{'told apart' if told_apart else 'NOT told apart'}", flush=True)
                continue
            status = "ok" if r["max_abs"] <= TOLERANCE else "FAIL"
            ok &= status == "ok"
            print(f"sp {folder} {r['adapter']} ulysses={r['ulysses']} ring={r['ring']}: "
                  f"max_abs={r['max_abs']:.3g} {status}", flush=True)
            if args.verbose or status == "FAIL":
                print(f"  per call: {', '.join(f'{d:.3g}' for d in r['per_call'])}; the identity "
                      f"changes the first output by {r['identity_effect']:.3g}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
