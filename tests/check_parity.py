#!/usr/bin/env python3
"""Parity with the official Stand-In implementation, on ComfyUI's own Wan model.

    python tests/check_parity.py [DIR ...]      (default: tests/fixtures/standin_parity and standin_multi)

Each DIR holds a fixture set described by its ``calls.json``: a tiny Wan DiT in ComfyUI's
format, a Stand-In adapter in one or more files, inputs (one ``reference``, or several
``references`` that one model carries together), and the outputs and cached reference
keys/values (all references' concatenated in order) the official code produced. For every folder and adapter file this loads the DiT
through ComfyUI's loader, patches a clone with the adapter, runs the call sequence inside one
real ComfyUI sampling run (CFGGuider.sample, so the per-generation cache lives exactly as it
does under KSampler), compares every output and every block's cached reference K/V, runs the
``base`` calls on the unpatched model, and prints

    parity <folder> <adapter file>: max_abs=<x> max_rel=<y> calls=<n> ok|FAIL

Exit status 0 only if every line says ok. max_rel is max|got - want| / max|want| over each
compared tensor; a tensor passes when |got - want| <= atol + rtol * |want| everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_DIRS = [os.path.join(HERE, "fixtures", "standin_parity"), os.path.join(HERE, "fixtures", "standin_multi")]
sys.path.insert(0, os.path.join(ROOT, "dev"))

import comfyhost  # noqa: E402


class Comparison:
    def __init__(self, atol: float, rtol: float):
        self.atol, self.rtol = atol, rtol
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.failures: list[str] = []

    def add(self, name, got, want):
        import torch
        got = got.detach().to("cpu", torch.float32)
        want = want.detach().to("cpu", torch.float32)
        if got.shape != want.shape:
            self.failures.append(f"{name}: shape {list(got.shape)} != expected {list(want.shape)}")
            self.max_abs = self.max_rel = float("inf")
            return
        diff = (got - want).abs()
        max_abs = float(diff.max()) if diff.numel() else 0.0
        scale = float(want.abs().max()) if want.numel() else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        self.max_abs = max(self.max_abs, max_abs)
        self.max_rel = max(self.max_rel, max_rel)
        if not torch.allclose(got, want, atol=self.atol, rtol=self.rtol) or not torch.isfinite(got).all():
            self.failures.append(f"{name}: max_abs={max_abs:.3g} max_rel={max_rel:.3g}")


def diffusion_output(base_model, x, sigma, ctx, transformer_options):
    """One apply_model call; returns the diffusion model's own output (before the model-sampling
    scaling), caught by a wrapper on a copy of the run's transformer_options."""
    import torch
    import comfy.patcher_extension
    seen = []

    def record(executor, *args, **kwargs):
        out = executor(*args, **kwargs)
        seen.append(out)
        return out

    to = dict(transformer_options)
    wrappers = comfy.patcher_extension.copy_nested_dicts(to.get("wrappers", {}))
    comfy.patcher_extension.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "parity_record", record, {"wrappers": wrappers})
    to["wrappers"] = wrappers
    with torch.no_grad():
        base_model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=to)
    assert len(seen) == 1
    return seen[0]


def run_sequence_in_sampling_run(patched, run_calls):
    """Run ``run_calls(guider, transformer_options)`` inside a real ComfyUI sampling run."""
    import torch
    import comfy.samplers

    class SequenceSampler(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None,
                   denoise_mask=None, disable_pbar=False):
            run_calls(model_wrap, extra_args["model_options"]["transformer_options"])
            return latent_image

    guider = comfy.samplers.CFGGuider(patched)
    dummy = [[torch.zeros(1, 1, 4096), {}]]
    guider.set_conds(dummy, dummy)
    guider.set_cfg(1.0)
    latent = torch.zeros(1, 16, 1, 2, 2)
    guider.sample(latent, latent, SequenceSampler(), torch.tensor([1.0, 0.0]), seed=0)


def check_folder(folder: str) -> list[tuple[str, Comparison, int]]:
    import torch
    import safetensors.torch
    import comfy.patcher_extension
    import comfy.sd

    pack = comfyhost.load_pack()
    from importlib import import_module
    adapter_mod = import_module(pack.__name__ + ".engine.identity.adapter")
    standin = import_module(pack.__name__ + ".engine.identity.patch")

    with open(os.path.join(folder, "calls.json")) as f:
        spec = json.load(f)
    if spec.get("format") != 1:
        raise SystemExit(f"{folder}: calls.json format {spec.get('format')} is not supported (1 is)")
    inputs = safetensors.torch.load_file(os.path.join(folder, spec["inputs"]))
    expected = safetensors.torch.load_file(os.path.join(folder, spec["expected"]))
    atol, rtol = float(spec["tolerance"]["atol"]), float(spec["tolerance"]["rtol"])

    model = comfy.sd.load_diffusion_model(os.path.join(folder, spec["model"]),
                                          model_options={"dtype": torch.float32})
    dm = model.model.diffusion_model
    if "references" in spec:
        # Several people on one model (the official dev/multi baseline), in the listed order.
        reference = [standin.IdentitySpec(inputs[name]) for name in spec["references"]]
    else:
        reference = inputs[spec["reference"]]

    def call(diffusion_model, entry, transformer_options):
        rows = entry.get("rows")
        x = inputs[entry["latents"]]
        ctx = inputs[entry["context"]]
        if rows is not None:
            x, ctx = x[rows], ctx[rows]
        t = torch.full((x.shape[0],), float(entry["timestep"]), dtype=torch.float32)
        with torch.no_grad():
            return diffusion_model(x, t, ctx, transformer_options=transformer_options)

    def call_through_apply_model(base_model, entry, transformer_options):
        """The call as ComfyUI's samplers make it (BaseModel.apply_model at sigma = t / 1000,
        every APPLY_MODEL wrapper included); returns the DiT's raw output, recorded by a
        DIFFUSION_MODEL wrapper, so no rounding of the denoised-x arithmetic enters."""
        rows = entry.get("rows")
        x = inputs[entry["latents"]]
        ctx = inputs[entry["context"]]
        if rows is not None:
            x, ctx = x[rows], ctx[rows]
        sigma = torch.full((x.shape[0],), float(entry["timestep"]) / 1000.0, dtype=torch.float32)
        if not torch.equal(base_model.model_sampling.timestep(sigma).float(),
                           torch.full_like(sigma, float(entry["timestep"]))):
            raise SystemExit(f"timestep {entry['timestep']} is not exactly reachable from a float32 sigma")
        return diffusion_output(base_model, x, sigma, ctx, transformer_options)

    results = []
    for adapter_file in spec["adapters"]:
        cmp = Comparison(atol, rtol)
        adapter = adapter_mod.load_adapter_file(os.path.join(folder, adapter_file))
        patched = standin.apply_standin(model, adapter, reference)
        n_calls = 0
        caches = []

        def run_calls(guider, transformer_options):
            nonlocal n_calls
            for i, entry in enumerate(spec["sequence"]):
                got = call_through_apply_model(guider.inner_model, entry, transformer_options)
                cmp.add(f"sequence[{i}] {entry['expect']}", got, expected[entry["expect"]])
                n_calls += 1
            caches.append(transformer_options.get(standin.RUN_KEY))
            run = caches[-1]
            if run is None or len(run.entries) != 1 or run.builds != 1:
                cmp.failures.append("reference K/V were not built exactly once for the sequence "
                                    f"(builds={getattr(run, 'builds', None)})")
                return
            kv = next(iter(run.entries.values()))
            ref_spec = spec.get("reference_kv")
            if ref_spec:
                if ref_spec["blocks"] != len(kv.keys):
                    cmp.failures.append(f"{len(kv.keys)} cached blocks, expected {ref_spec['blocks']}")
                for b in range(min(ref_spec["blocks"], len(kv.keys))):
                    cmp.add(f"k block {b}", kv.keys[b], expected[ref_spec["k"].format(i=b)])
                    cmp.add(f"v block {b}", kv.values[b], expected[ref_spec["v"].format(i=b)])

        run_sequence_in_sampling_run(patched, run_calls)
        if caches and caches[0] is not None and caches[0].entries:
            cmp.failures.append("reference K/V survived the end of the sampling run")

        for entry in spec.get("base", []):
            got = call(dm, entry, {})
            cmp.add(f"base {entry['expect']}", got, expected[entry["expect"]])
            n_calls += 1
        results.append((adapter_file, cmp, n_calls))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", default=DEFAULT_DIRS, help="fixture folders")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every failing tensor")
    args = parser.parse_args(argv)

    comfyhost.setup_comfy(cpu=True)
    import torch
    torch.manual_seed(0)

    ok = True
    for folder in args.dirs:
        folder = os.path.abspath(folder)
        for adapter_file, cmp, n_calls in check_folder(folder):
            status = "ok" if not cmp.failures else "FAIL"
            ok &= status == "ok"
            print(f"parity {folder} {adapter_file}: max_abs={cmp.max_abs:.3g} "
                  f"max_rel={cmp.max_rel:.3g} calls={n_calls} {status}", flush=True)
            for failure in cmp.failures if (args.verbose or status == "FAIL") else []:
                print(f"  {failure}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
