#!/usr/bin/env python3
"""The video keys' path through one Stand-In block, at the 14B shapes, in bf16 on this machine.

    python tests/bench_keypath.py [--tokens 32760] [--ref-tokens 1024] [--dim 5120] [--reps 9]

``concat``: RoPE, cast to the compute dtype, then ``torch.cat`` with the reference keys (the
first version of the pack, and again now, at the attention call); ``into``: RoPE written straight into the [video; reference] buffer
(what the pack's own copy of Wan's block did before the video ran ComfyUI's block); ``plain``: RoPE and cast alone, what Wan's own block
does with its keys. Both CFG rows. Interleaved in rotating order; medians, fastest runs and
page faults per call. The two outputs are checked to be bit for bit equal. Not a test.
(The buffers are allocated in the timed calls, so a warm-up round precedes the timed ones.)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "dev"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=32760)
    p.add_argument("--ref-tokens", type=int, default=1024)
    p.add_argument("--dim", type=int, default=5120)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--malloc", choices=("heap", "default"), default="heap",
                   help="as in bench_overhead.py: heap keeps freed memory, so a buffer costs its "
                        "traffic and not the kernel's page faults (as on a GPU)")
    args = p.parse_args(argv)
    if args.malloc == "heap":
        from bench_overhead import restart_with_heap_malloc
        restart_with_heap_malloc()

    import comfyhost
    comfyhost.setup_comfy(cpu=True)
    import torch
    torch.set_num_threads(args.threads)
    pack = comfyhost.load_pack()
    from importlib import import_module
    standin = import_module(pack.__name__ + ".engine.identity.patch")

    b, s, r, c, d = args.batch, args.tokens, args.ref_tokens, args.dim, 128
    n = c // d
    dtype = torch.bfloat16
    g = torch.Generator().manual_seed(0)
    freqs = torch.randn(1, s, 1, d // 2, 2, 2, generator=g)  # ComfyUI's rope table layout, fp32
    k_video = torch.randn(b, s, c, generator=g).to(dtype)
    k_ref = torch.randn(1, r, c, generator=g).to(dtype)

    def concat():
        k = standin.apply_rope(k_video.view(b, s, n, d), freqs).view(b, s, c)
        return torch.cat((k, k_ref.expand(b, -1, -1)), dim=1)

    def into():
        k = torch.empty((b, s + r, c), dtype=dtype)
        k[:, s:] = k_ref
        standin.apply_rope(k_video.view(b, s, n, d), freqs, out=k[:, :s].view(b, s, n, d))
        return k

    def plain():
        return standin.apply_rope(k_video.view(b, s, n, d), freqs)

    assert torch.equal(concat(), into())
    fns = (concat, into, plain)
    for f in fns:
        f()
    wall = {f.__name__: [] for f in fns}
    faults = {f.__name__: [] for f in fns}
    for i in range(args.reps):
        for f in fns[i % 3:] + fns[:i % 3]:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            out = f()
            wall[f.__name__].append(time.perf_counter() - t0)
            faults[f.__name__].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            del out
    mb = b * s * c * torch.empty((), dtype=dtype).element_size() / 2**20
    print(f"keys [{b}, {s} + {r}, {c}] {dtype}: one copy of the video keys is {mb:,.0f} MiB")
    for name in wall:
        extra = statistics.median(wall[name]) - statistics.median(wall["plain"])
        print(f"{name:7s} median {statistics.median(wall[name]) * 1e3:8.1f} ms (+{extra * 1e3:6.1f} over plain)  "
              f"fastest {min(wall[name]) * 1e3:8.1f} ms  page faults {statistics.median(faults[name]):,.0f}")


if __name__ == "__main__":
    sys.exit(main())
