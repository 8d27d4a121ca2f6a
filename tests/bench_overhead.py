#!/usr/bin/env python3
"""What the Stand-In identity costs per sampling step on ComfyUI's own Wan model.

    python tests/bench_overhead.py [--preset auto|cpu|14b] [--steps N] [--warmup W] [--rounds R]

Three variants of one random-weight Wan 2.1 T2V DiT, loaded by ComfyUI's loader from a state
dict in the released checkpoints' format, sampled by ``comfy.sample.sample`` (KSampler's path:
euler, CFG > 1 so cond and uncond run as one batch, as users run it):

* ``base``:    the plain model;
* ``standin``: the patched model, reference K/V built once per generation (the pack as shipped);
* ``naive``:   the same patch with the per-generation cache taken away, so every model call
               runs the reference tokens through every block again (what the cache saves).

``--people`` adds several people on the one model (the official dev/multi baseline) and
regions: ``people2`` / ``people3`` (2 or 3 references, every video token sees all of them),
``people1_regions`` (one reference, left half), ``people2_regions`` (left / right half) and
``people3_regions`` (left / middle / right third), each video token seeing only the reference
of its region; and prints the cache bytes of 1, 2 and 3 people at 14B / 81 frames / 480p.

``--baseline-pack DIR`` adds ``standin_before``: the same patch made by another copy of this
pack (e.g. a ``git worktree`` of an older commit), to compare two versions in one run.

Timing: the sampler's callback stamps the end of every step; a step's time is the gap between
two stamps. The first ``--warmup`` steps of every sampling run are not timed (they hold the
model load, the reference K/V build and first-call allocations). The variants are interleaved,
one sampling run each per round, ``--rounds`` rounds in rotating order, in this one process, so
machine noise falls on all of them alike. Reported: the median over all timed steps and its
ratio to ``base``; as checks, the median over rounds of each round's ratio ("paired"), the
ratio of the fastest steps ("best": noise only ever adds time), the same medians in process
CPU time, and the ratio of the arithmetic work ("FLOPs", the minimum any implementation pays).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` around each variant's runs (exact,
in-process). On the CPU the process's peak RSS (VmHWM) cannot be split between variants inside
one process, so each variant is sampled once more in a fresh subprocess that builds the same
model, resets VmHWM (/proc/self/clear_refs) just before sampling and reports it after; RSS
moves by tens of MB with glibc's caching, so each variant's peak of tensor memory allocated
during one sampling run (over what existed before it) is also read from the profiler's
allocation records, exact to the byte.

The last line printed is one JSON object. Not part of the test run (pytest collects test_*.py).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "dev"))
sys.path.insert(0, HERE)

# The real case: Wan 2.1 T2V 14B (dim 5120, 40 blocks, 40 heads of 128), an 832x480, 81-frame
# video (latent 21x60x104 -> 21x30x52 = 32,760 tokens) and a 512x512 reference (latent 64x64 ->
# 1,024 tokens), 512 text tokens.
PRESETS = {
    "14b": dict(dim=5120, ffn_dim=13824, blocks=40, frames=21, height=60, width=104,
                ref_height=64, ref_width=64, text_tokens=512, dtype="bf16",
                steps=3, warmup=1, rounds=2, threads=None),
    # What two CPU cores finish in minutes with enough steps for a median: every token count
    # of the real case / 16 (video 8x16x16 = 2,048 vs 32,760; reference 8x8 = 64 vs 1,024;
    # text 32 vs 512), head size 128, ffn / dim as at 14B, dim 384 so that attention is about
    # the same share of the work (48% of the FLOPs; 52% at 14B). The counts are taken as they come:
    # this CPU's q.k matmul is 15-50% slower per key at some key counts (3,300, 2,104) than at
    # their neighbours (3,304, 2,112), a property of the matmul that no choice here should hide.
    # The number of blocks changes no ratio (each block does the same work), so two blocks buy
    # more timed steps; short runs in many rounds put the variants' steps seconds apart. One
    # thread: on a shared 2-core machine a neighbour taking one core stalls a 2-thread run at
    # every barrier (steps varied 2x), a 1-thread run much less.
    "cpu": dict(dim=384, ffn_dim=1024, blocks=2, frames=8, height=32, width=32,
                ref_height=16, ref_width=16, text_tokens=32, dtype="fp32",
                steps=2, warmup=1, rounds=16, threads=1),
}
OVERRIDES = ("dim", "ffn_dim", "blocks", "frames", "height", "width", "ref_height", "ref_width",
             "text_tokens", "dtype", "steps", "warmup", "rounds", "threads")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
ATTENTION_FLAGS = {"pytorch": "use_pytorch_cross_attention", "quad": "use_quad_cross_attention",
                   "split": "use_split_cross_attention"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("auto", *PRESETS), default="auto",
                   help="auto: 14b on CUDA, cpu otherwise")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, help="timed steps per sampling run (cpu: 2, 14b: 3)")
    p.add_argument("--warmup", type=int, help="untimed steps at the start of every run, >= 1 (preset: 1)")
    p.add_argument("--rounds", type=int, help="sampling runs per variant, interleaved (cpu: 16, 14b: 2)")
    p.add_argument("--threads", type=int, help="torch CPU threads (cpu: 1; 14b: torch's default)")
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--strength", type=float, default=1.0,
                   help="identity strength (1 = the official, mask-free path)")
    p.add_argument("--attention", choices=("default", *ATTENTION_FLAGS), default="default",
                   help="ComfyUI attention backend (default: what ComfyUI picks on this device)")
    p.add_argument("--cache-on-cpu", action="store_true", help="apply_standin(cache_on_cpu=True)")
    p.add_argument("--baseline-pack", metavar="DIR",
                   help="another copy of this pack: adds its patch as variant standin_before")
    p.add_argument("--people", action="store_true",
                   help="add 2 and 3 people, and regions for 1, 2, 3 people (see above)")
    p.add_argument("--no-mem", action="store_true", help="skip the per-variant peak-memory runs (CPU)")
    p.add_argument("--malloc", choices=("heap", "default"), default="heap",
                   help="CPU timing runs: heap (restarts under glibc settings that keep freed memory, "
                        "as a GPU caching allocator does) or default (every large tensor a fresh mmap)")
    for name in OVERRIDES[:10]:
        p.add_argument(f"--{name.replace('_', '-')}", type=str if name == "dtype" else int,
                       help="override the preset (latent sizes; dtype fp32|bf16|fp16)")
    p.add_argument("--mem-probe", help=argparse.SUPPRESS)
    p.add_argument("--config-json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup is not None and args.warmup < 1:
        p.error("--warmup must be >= 1: a step is timed from the end of the previous one")
    if (args.steps is not None and args.steps < 1) or (args.rounds is not None and args.rounds < 1):
        p.error("--steps and --rounds must be >= 1")
    return args


def resolve_config(args):
    if args.config_json:
        return json.loads(args.config_json)
    import torch
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    preset = args.preset if args.preset != "auto" else ("14b" if device == "cuda" else "cpu")
    c = dict(PRESETS[preset], preset=preset, device=device, cfg=args.cfg, strength=args.strength,
             attention=args.attention, cache_on_cpu=args.cache_on_cpu, sampler="euler",
             scheduler="simple", malloc=args.malloc if device == "cpu" else None,
             baseline_pack=args.baseline_pack and os.path.abspath(args.baseline_pack),
             people=args.people)
    for key in OVERRIDES:
        if getattr(args, key) is not None:
            c[key] = getattr(args, key)
    if c["dtype"] not in DTYPES:
        raise SystemExit(f"--dtype {c['dtype']}: use one of {', '.join(DTYPES)}")
    if c["dim"] % 128:
        raise SystemExit("--dim must be a multiple of 128 (ComfyUI reads num_heads = dim // 128)")
    c["heads"] = c["dim"] // 128
    c["video_tokens"] = c["frames"] * -(-c["height"] // 2) * -(-c["width"] // 2)
    c["ref_tokens"] = -(-c["ref_height"] // 2) * -(-c["ref_width"] // 2)
    c["variants"] = ["base", "standin", "naive"] + (["standin_before"] if c["baseline_pack"] else [])
    if c.get("people"):
        c["variants"] += list(PEOPLE)
    return c


# Several people: (references, layouts or None for every token seeing every reference).
PEOPLE = {"people2": (2, None), "people3": (3, None), "people1_regions": (1, ["left half"]),
          "people2_regions": (2, ["left half", "right half"]),
          "people3_regions": (3, ["left third", "middle third", "right third"])}


def cache_bytes_14b(people: int) -> int:
    """Reference K/V of ``people`` 512x512 references on Wan 2.1 14B (40 blocks, dim 5120) in
    bf16/fp16: 2 x 40 x 1,024 tokens x 5,120 x 2 bytes each. The video's size does not enter."""
    return people * 2 * 40 * 1024 * 5120 * 2


def flop_model(c):
    """Multiply-adds x 2 of one model call (both CFG rows): the arithmetic minimum of each ratio."""
    L, R, T, d, f, n = c["video_tokens"], c["ref_tokens"], c["text_tokens"], c["dim"], c["ffn_dim"], c["blocks"]
    rows = 2 if c["cfg"] != 1.0 else 1
    per_row = (8 * L * d * d + 4 * L * L * d                       # self-attn projections, attention
               + 4 * L * d * d + 4 * T * d * d + 4 * L * T * d     # cross-attention
               + 4 * L * d * f)                                    # FFN
    base = n * rows * per_row
    extra_keys = n * rows * 4 * L * R * d                          # video queries x reference keys
    # One reference pass per call, shared by the batch: q/k/v/o with the rank-128 LoRA,
    # attention among reference tokens, FFN.
    ref_pass = n * (8 * R * d * d + 12 * R * d * 128 + 4 * R * R * d + 4 * R * d * f)
    out = {"base": base, "standin": base + extra_keys, "naive": base + extra_keys + ref_pass,
           "standin_before": base + extra_keys}
    # Regions: every video token attends to the references of its own region only (one each
    # with halves or thirds), so the extra keys are those of one person.
    for name, (n, layouts) in PEOPLE.items():
        out[name] = base + extra_keys * (1 if layouts else n)
    return out


# --------------------------------------------------------------------------------------
# Building the model and the variants
# --------------------------------------------------------------------------------------

def load_pack_copy(path, name="comfyui_standin_before"):
    """Import another copy of this pack (e.g. a worktree of an older commit) under its own name."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def setup(c):
    import comfyhost
    comfyhost.setup_comfy(cpu=c["device"] == "cpu")
    import comfy.cli_args
    if c["attention"] != "default":
        setattr(comfy.cli_args.args, ATTENTION_FLAGS[c["attention"]], True)
    import logging
    logging.getLogger().setLevel(logging.WARNING)

    import torch
    if c.get("threads"):
        torch.set_num_threads(c["threads"])
    import comfy.patcher_extension
    import wan_tiny
    from importlib import import_module

    packs = {"standin": comfyhost.load_pack()}
    if c["baseline_pack"]:
        packs["standin_before"] = load_pack_copy(c["baseline_pack"])

    dtype = getattr(torch, DTYPES[c["dtype"]])
    # Random weights are made where they will run (a 14B state dict is 28 GB in bf16).
    sd = wan_tiny.random_wan_t2v_state_dict(c["dim"], c["ffn_dim"], c["blocks"], dtype=dtype,
                                            device=c["device"], seed=0)
    base = wan_tiny.load_state_dict_model(sd, dtype=dtype)
    del sd  # the loader popped every tensor into the model; nothing else holds them
    adapter_sd = wan_tiny.random_adapter_sd(c["blocks"], c["dim"], rank=128, seed=1)
    g = torch.Generator().manual_seed(2)
    reference = torch.randn((1, 16, 1, c["ref_height"], c["ref_width"]), generator=g)

    models = {"base": base}
    builds = []
    current = {"variant": None}

    def sync():
        if c["device"] == "cuda":
            torch.cuda.synchronize()

    def timed(build):
        def timed_build(*a, **kw):
            sync()
            t0 = time.perf_counter()
            kv = build(*a, **kw)
            sync()
            builds.append(dict(variant=current["variant"], s=time.perf_counter() - t0, nbytes=kv.nbytes,
                               dtype=kv.keys[0].dtype, device=kv.keys[0].device))
            return kv
        return timed_build

    for variant, pack in packs.items():
        standin = import_module(pack.__name__ + ".engine.identity.patch")
        adapter_mod = import_module(pack.__name__ + ".engine.identity.adapter")
        adapter = adapter_mod.StandInAdapter.from_state_dict(dict(adapter_sd))
        models[variant] = standin.apply_standin(base, adapter, reference, strength=c["strength"],
                                                cache_on_cpu=c["cache_on_cpu"])
        patch = standin.find_standin(models[variant])
        # An attribute of the benchmark's own patch object: the pack's code is not changed.
        patch.build = timed(patch.build)
        if variant == "standin":
            run_key = standin.RUN_KEY

            def drop_run_cache(executor, *args, **kwargs):
                # Runs inside Stand-In's OUTER_SAMPLE wrapper: without the run's cache, every
                # model call builds the reference K/V again.
                executor.class_obj.model_options["transformer_options"].pop(run_key, None)
                return executor(*args, **kwargs)

            models["naive"] = models["standin"].clone()
            models["naive"].add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE,
                                                 "zz_bench_naive", drop_run_cache)
            if c.get("people"):
                regions = import_module(pack.__name__ + ".engine.identity.regions")
                refs = [reference] + [torch.randn(reference.shape, generator=g) for _ in range(2)]
                for name, (n, layouts) in PEOPLE.items():
                    specs = [standin.IdentitySpec(refs[j], 1.0, regions.Region(layouts[j]) if layouts else None)
                             for j in range(n)]
                    models[name] = standin.apply_standin(base, adapter, specs, strength=c["strength"],
                                                         cache_on_cpu=c["cache_on_cpu"])
                    standin.find_standin(models[name]).build = timed(standin.find_standin(models[name]).build)

    ctx = torch.randn((2, c["text_tokens"], 4096), generator=g)
    latent = torch.zeros((1, 16, c["frames"], c["height"], c["width"]))
    noise = torch.randn(latent.shape, generator=g)
    # What the blocks compute in: the weights' dtype, unless ComfyUI casts them on the fly
    # (bf16 weights on a CPU run in fp32).
    compute_dtype = base.model.manual_cast_dtype or base.model.get_dtype()
    return dict(torch=torch, models=models, builds=builds, current=current, ctx=ctx,
                latent=latent, noise=noise, sync=sync, dtype=dtype, compute_dtype=compute_dtype)


def sample_once(env, c, variant, steps):
    """One sampling run through ComfyUI's KSampler path; returns (wall, cpu) at each step's end."""
    import comfy.sample
    stamps = []
    env["current"]["variant"] = variant

    def callback(step, x0, x, total):
        env["sync"]()
        stamps.append((time.perf_counter(), time.process_time()))

    ctx = env["ctx"]
    comfy.sample.sample(env["models"][variant], env["noise"], steps, c["cfg"], c["sampler"], c["scheduler"],
                        [[ctx[0:1], {}]], [[ctx[1:2], {}]], env["latent"], callback=callback,
                        disable_pbar=True, seed=0)
    return stamps


# --------------------------------------------------------------------------------------
# Peak memory on the CPU: one fresh process per variant
# --------------------------------------------------------------------------------------

def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def mem_probe(c, variant):
    env = setup(c)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand what setup freed back to the OS first
    except OSError:
        pass
    rss_before = _status_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, so the peak read below is the sampling run's alone
        method = "VmHWM reset just before sampling"
    except OSError:
        method = "VmHWM since process start (clear_refs not writable)"
    sample_once(env, c, variant, c["warmup"] + 2)
    print(json.dumps({"variant": variant, "peak": _status_bytes("VmHWM"), "before": rss_before,
                      "method": method}))


def cpu_peaks(c):
    peaks, method = {}, None
    for variant in c["variants"]:
        env = {k: v for k, v in os.environ.items() if k not in HEAP_MALLOC_ENV}
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--mem-probe", variant,
                               "--config-json", json.dumps(c)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"memory probe for {variant} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        peaks[variant] = {"peak": r["peak"], "before": r["before"]}
        method = (f"peak RSS of a fresh subprocess per variant, {c['warmup'] + 2} steps "
                  f"({r['method']})")
    return peaks, method


def tensor_peak_over_start(env, c, variant):
    """Peak of the tensor memory a sampling run allocates on top of what existed before it: the
    CPU counterpart of CUDA's max_memory_allocated, exact to the byte where RSS (allocator
    caching, fragmentation) blurs a few MB. Read from the profiler's allocation records, whose
    running total starts at zero with the profiler; None where this torch lacks them."""
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)  # the profiler's C++ start/stop chatter
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                sample_once(env, c, variant, c["warmup"] + 2)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        stack, peak = list(prof.profiler.kineto_results.experimental_event_tree()), 0
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.tag == _EventType.Allocation:
                peak = max(peak, node.extra_fields.total_allocated)
        return peak
    except (ImportError, AttributeError):
        return None


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------

def describe_device(c, torch):
    if c["device"] == "cuda":
        return f"cuda: {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (f"cpu: {platform.machine()} {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} thread(s) of {os.cpu_count()} cores, torch {torch.__version__}")


# glibc hands every tensor above 32 MB back to the OS when it is freed, so the next one
# page-faults all its pages again: a quarter of a CPU step's time went to the kernel, and its
# noise with it. Served from a heap that keeps freed memory instead, the CPU reuses memory as
# the CUDA caching allocator does. Set before the process starts (glibc reads them once);
# timing only: the memory probes run with glibc's defaults.
HEAP_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def restart_with_heap_malloc():
    """Run this script again under HEAP_MALLOC_ENV unless it already is; False if not Linux."""
    if all(os.environ.get(k) == v for k, v in HEAP_MALLOC_ENV.items()):
        return True
    if platform.system() != "Linux":
        return False
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]],
              {**os.environ, **HEAP_MALLOC_ENV})


def main(argv=None):
    args = parse_args(argv)
    c = resolve_config(args)
    if args.mem_probe:
        mem_probe(c, args.mem_probe)
        return 0
    if c["malloc"] == "heap" and not restart_with_heap_malloc():
        c["malloc"] = "default (not Linux)"
    env = setup(c)
    torch = env["torch"]
    import comfy.ldm.modules.attention as attention_mod
    c["attention_fn"] = attention_mod.optimized_attention.__name__
    variants = c["variants"]
    cuda = c["device"] == "cuda"
    print(f"config: {json.dumps(c)}", flush=True)

    times = {v: [] for v in variants}
    cpu_times = {v: [] for v in variants}
    per_round = {v: [] for v in variants}
    cuda_peak = {v: 0 for v in variants}
    cuda_over = {v: 0 for v in variants}
    t_start = time.perf_counter()
    # One untimed run per variant first: thread pools, allocator, model load onto the device.
    for v in variants:
        sample_once(env, c, v, c["warmup"] + 1)
    env["builds"].clear()
    for r in range(c["rounds"]):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                allocated_before = torch.cuda.memory_allocated()
            stamps = sample_once(env, c, v, c["warmup"] + c["steps"])
            if cuda:
                cuda_peak[v] = max(cuda_peak[v], torch.cuda.max_memory_allocated())
                cuda_over[v] = max(cuda_over[v], torch.cuda.max_memory_allocated() - allocated_before)
            timed = list(zip(stamps[c["warmup"] - 1:], stamps[c["warmup"]:]))
            times[v] += [b[0] - a[0] for a, b in timed]
            cpu_times[v] += [b[1] - a[1] for a, b in timed]
            per_round[v].append(statistics.median(b[0] - a[0] for a, b in timed))
        print(f"round {r + 1}/{c['rounds']}: " + ", ".join(f"{v} {per_round[v][-1]:.3f}s" for v in variants)
              + f"  ({time.perf_counter() - t_start:.0f}s elapsed)", flush=True)

    med = {v: statistics.median(times[v]) for v in variants}
    best = {v: min(times[v]) for v in variants}  # noise only ever adds time
    cpu_med = {v: statistics.median(cpu_times[v]) for v in variants}
    paired = {v: statistics.median(a / b for a, b in zip(per_round[v], per_round["base"])) for v in variants}
    # The standin variant builds once per sampling run, the naive one at every model call.
    builds = {v: [b for b in env["builds"] if b["variant"] == v] for v in variants}
    kv = builds["standin"][0]
    kv_build_s = statistics.median(b["s"] for b in builds["standin"])
    elem = torch.empty((), dtype=env["compute_dtype"]).element_size()
    formula = 2 * c["blocks"] * c["ref_tokens"] * c["dim"] * elem
    flops = flop_model(c)

    if cuda:
        peaks = {v: {"peak": cuda_peak[v], "tensors": cuda_over[v]} for v in variants}
        mem_method = ("torch.cuda.max_memory_allocated over each variant's timed runs, in this process; "
                      "'tensors': that peak minus what was allocated when the run began")
    elif args.no_mem:
        peaks, mem_method = {v: {"peak": None, "tensors": None} for v in variants}, "skipped (--no-mem)"
    else:
        print("peak memory: profiled runs, then one fresh subprocess per variant ...", flush=True)
        tensors = {v: tensor_peak_over_start(env, c, v) for v in variants}
        peaks, mem_method = cpu_peaks(c)
        for v in variants:
            peaks[v]["tensors"] = tensors[v]
        mem_method += ("; 'tensors': peak of the tensor memory one sampling run allocates over what "
                       "existed before it, from the profiler's allocation records, in this process")

    def mib(x):
        return "-" if x is None else f"{x / 2**20:,.1f} MiB"

    print()
    print(f"device: {describe_device(c, torch)}; attention: {c['attention_fn']}; weights {c['dtype']}, "
          f"compute {env['compute_dtype']}")
    print(f"shapes: dim {c['dim']}, {c['blocks']} blocks, {c['heads']} heads of 128, ffn {c['ffn_dim']}; "
          f"video {c['video_tokens']} tokens, reference {c['ref_tokens']} "
          f"(1:{c['video_tokens'] / c['ref_tokens']:.2f}), text {c['text_tokens']}; CFG {c['cfg']} "
          f"(cond + uncond in one batch); strength {c['strength']}")
    print(f"{'variant':<15}{'s/step':>9}{'ratio':>8}{'paired':>8}{'best':>8}{'cpu s/step':>11}{'ratio':>8}"
          f"{'FLOPs':>8}{'steps':>6}{'K/V builds':>11}  memory during sampling")
    for v in variants:
        mem = f"tensors +{mib(peaks[v]['tensors'])}, peak {mib(peaks[v]['peak'])}"
        if peaks[v].get("before") is not None:
            mem += f" (RSS +{mib(peaks[v]['peak'] - peaks[v]['before'])})"
        print(f"{v:<15}{med[v]:>9.4f}{med[v] / med['base']:>8.4f}{paired[v]:>8.4f}"
              f"{best[v] / best['base']:>8.4f}{cpu_med[v]:>11.4f}"
              f"{cpu_med[v] / cpu_med['base']:>8.4f}{flops[v] / flops['base']:>8.4f}{len(times[v]):>6}"
              f"{len(builds[v]):>11}  {mem}")
    print(f"reference K/V build: {kv_build_s:.4f} s (median of {len(builds['standin'])}) = "
          f"{kv_build_s / med['base']:.4f} of a base step")
    print(f"cache: {kv['nbytes']:,} bytes, {kv['dtype']} on {kv['device']}; 2 x {c['blocks']} blocks x "
          f"{c['ref_tokens']} tokens x {c['dim']} x {elem} bytes = {formula:,} "
          f"({'equal' if formula == kv['nbytes'] else 'DIFFERENT'}); compute dtype {env['compute_dtype']}")
    print(f"memory: {mem_method}")
    people = {}
    if c.get("people"):
        one = kv["nbytes"]
        for v in ["standin", *PEOPLE]:
            n = PEOPLE[v][0] if v in PEOPLE else 1
            nbytes = builds[v][0]["nbytes"]
            people[v] = {"people": n, "regions": bool(v in PEOPLE and PEOPLE[v][1]),
                         "ratio": round(med[v] / med["base"], 4), "ratio_paired": round(paired[v], 4),
                         "ratio_flops": round(flops[v] / flops["base"], 4), "cache_bytes": nbytes,
                         "cache_x_one": round(nbytes / one, 4)}
            print(f"{v:<16} people {n}  regions {'yes' if people[v]['regions'] else 'no ':<3}  ratio "
                  f"{people[v]['ratio']:.4f}  paired {people[v]['ratio_paired']:.4f}  FLOPs "
                  f"{people[v]['ratio_flops']:.4f}  cache {nbytes:,} bytes ({people[v]['cache_x_one']} x one)")
        for n in (1, 2, 3):
            print(f"cache at 14B / 81 frames / 480p (bf16), {n} {'person' if n == 1 else 'people'}: {cache_bytes_14b(n):,} bytes "
                  f"({cache_bytes_14b(n) / 2**20:,.0f} MiB)")
    result = {
        "config": {k: c[k] for k in ("preset", "dim", "ffn_dim", "blocks", "heads", "video_tokens",
                                     "ref_tokens", "text_tokens", "dtype", "cfg", "strength", "steps",
                                     "warmup", "rounds", "threads", "malloc", "attention_fn", "cache_on_cpu")},
        "device": describe_device(c, torch),
        "s_per_step": {v: round(med[v], 5) for v in variants},
        "ratio_standin": round(med["standin"] / med["base"], 4),
        "ratio_naive": round(med["naive"] / med["base"], 4),
        "ratio_paired": {v: round(paired[v], 4) for v in variants if v != "base"},
        "ratio_best": {v: round(best[v] / best["base"], 4) for v in variants if v != "base"},
        "ratio_cpu_time": {v: round(cpu_med[v] / cpu_med["base"], 4) for v in variants if v != "base"},
        "ratio_flops": {v: round(flops[v] / flops["base"], 4) for v in variants if v != "base"},
        "kv_build_s": round(kv_build_s, 5),
        "cache_bytes": kv["nbytes"],
        "cache_bytes_formula": formula,
        "cache": f"{kv['dtype']} on {kv['device']}",
        "compute_dtype": str(env["compute_dtype"]),
        "peak_mem_bytes": {v: peaks[v]["peak"] for v in variants},
        "peak_tensor_bytes_over_start": {v: peaks[v]["tensors"] for v in variants},
        "peak_mem_method": mem_method,
    }
    if people:
        result["people"] = people
        result["cache_bytes_14b_480p_81f"] = {n: cache_bytes_14b(n) for n in (1, 2, 3)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
