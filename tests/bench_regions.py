#!/usr/bin/env python3
"""How to keep each person's reference to their region: the mechanisms side by side, on one
self-attention call.

    python tests/bench_regions.py [--video 4096] [--ref 256] [--people 2] [--rounds 15]

Variants, each on the same q/k/v (batch 2 as with CFG, heads of 128):

* ``plain``:   ComfyUI's attention over the video alone (the plain model);
* ``all``:     over [video; every reference] for every query (the official baseline, no regions);
* ``grouped``: the pack's way: queries grouped by the references their region lets them see,
               one call of ComfyUI's attention per group over [video; those references];
* ``dense``:   one call over [video; every reference] with an additive [queries x keys] mask
               (-inf outside each person's region), through PyTorch SDPA (the backends that
               take no mask cannot run it at all);
* ``plain_sdpa``, ``grouped_sdpa``: ``plain`` and ``grouped`` through PyTorch SDPA too, so that
               ``grouped_sdpa`` against ``dense`` compares the mechanisms on one backend (on a
               CPU, ComfyUI picks sub-quadratic attention, which is slower than SDPA here).

People get equal vertical strips (halves for 2). Timing: variants interleaved, ``--rounds``
rounds, median per variant and its ratio to ``plain``; the outputs of ``grouped`` and ``dense``
are compared. Also printed: the dense mask's size at 14B / 81 frames / 480p, which the grouped
way never allocates. Not part of the test run (pytest collects test_*.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "dev"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", type=int, default=4096, help="video tokens (a multiple of 16 x people)")
    p.add_argument("--ref", type=int, default=256, help="tokens per reference")
    p.add_argument("--people", type=int, default=2)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import comfyhost
    comfyhost.setup_comfy(cpu=True)
    import logging
    logging.getLogger().setLevel(logging.WARNING)
    import torch
    torch.set_num_threads(args.threads)
    from importlib import import_module
    pack = comfyhost.load_pack()
    standin = import_module(pack.__name__ + ".engine.identity.patch")
    regions = import_module(pack.__name__ + ".engine.identity.regions")
    import comfy.ldm.modules.attention as attention_mod

    n, heads, d = args.people, args.heads, 128
    width = 16 * n
    height = args.video // width
    L, R, b = height * width, args.ref, 2
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, L, heads * d, generator=g) for _ in range(3))
    k_ref, v_ref = (torch.randn(1, n * R, heads * d, generator=g) for _ in range(2))
    layouts = {2: ["left half", "right half"], 3: ["left third", "middle third", "right third"]}
    regs = [regions.Region(x) for x in layouts.get(n, ["whole frame"] * n)]
    groups = regions.query_groups(regs, range(1), height, width)
    kv = standin.ReferenceKV([k_ref], [v_ref], n * R, tuple((j * R, (j + 1) * R) for j in range(n)))
    call = standin.CallState(kv, None, None, groups, (None,) * n, L)
    fn = attention_mod.optimized_attention
    kw = {"transformer_options": {}} if standin._takes_transformer_options(fn) else {}
    keys_all = torch.cat((k, k_ref.expand(b, -1, -1)), 1)
    values_all = torch.cat((v, v_ref.expand(b, -1, -1)), 1)
    mask = torch.zeros(L, L + n * R)
    for group in groups:
        for j in range(n):
            if j not in group.allowed:
                mask[group.index, L + j * R:L + (j + 1) * R] = float("-inf")

    variants = {
        "plain": lambda: fn(q, k, v, heads, **kw),
        "all": lambda: fn(q, torch.cat((k, k_ref.expand(b, -1, -1)), 1), torch.cat((v, v_ref.expand(b, -1, -1)), 1),
                          heads, **kw),
        "grouped": lambda: standin._grouped_attention(call, fn, q, k, v, k_ref.expand(b, -1, -1),
                                                      v_ref.expand(b, -1, -1), heads, 1, (), dict(kw)),
        "dense": lambda: attention_mod.attention_pytorch(q, keys_all, values_all, heads, mask=mask),
        "plain_sdpa": lambda: attention_mod.attention_pytorch(q, k, v, heads),
        "grouped_sdpa": lambda: standin._grouped_attention(call, attention_mod.attention_pytorch, q, k, v,
                                                           k_ref.expand(b, -1, -1), v_ref.expand(b, -1, -1),
                                                           heads, 1, (), {}),
    }
    with torch.no_grad():
        grouped, dense = variants["grouped"](), variants["dense"]()
        diff = float((grouped - dense).abs().max())
        diff = max(diff, float((variants["grouped_sdpa"]() - dense).abs().max()))
        times = {name: [] for name in variants}
        cpu = {name: [] for name in variants}
        for r in range(args.rounds):
            order = list(variants)[r % len(variants):] + list(variants)[:r % len(variants)]
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                variants[name]()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    med = {name: statistics.median(t) for name, t in times.items()}
    cpu_med = {name: statistics.median(t) for name, t in cpu.items()}
    print(f"video {L} tokens ({height}x{width}), {n} people x {R} reference tokens, {heads} heads of {d}, "
          f"batch {b}; attention {fn.__name__}; {torch.get_num_threads()} thread(s)")
    for name in variants:
        print(f"{name:<8} {med[name] * 1000:9.2f} ms  ratio to plain {med[name] / med['plain']:.3f}   "
              f"cpu {cpu_med[name] * 1000:9.2f} ms  ratio {cpu_med[name] / cpu_med['plain']:.3f}")
    print(f"grouped vs dense: max abs difference {diff:.2e}")
    l14, keys14 = 21 * 30 * 52, 21 * 30 * 52 + n * 1024
    mask_bytes = l14 * keys14 * 2
    print(f"dense mask at 14B / 81 frames / 480p, {n} people: {l14} x {keys14} x 2 bytes = {mask_bytes:,} "
          f"({mask_bytes / 2**30:.2f} GiB, per call, shared by the heads); grouped: none")
    print(json.dumps({"video_tokens": L, "ref_tokens": R, "people": n, "ms": {k: round(x * 1000, 3) for k, x in med.items()},
                      "ratio_to_plain": {k: round(x / med["plain"], 4) for k, x in med.items()},
                      "cpu_ratio_to_plain": {k: round(x / cpu_med["plain"], 4) for k, x in cpu_med.items()},
                      "grouped_vs_dense_max_abs": diff, "dense_mask_bytes_14b": mask_bytes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
