#!/usr/bin/env python3
"""Soak: many prompts through one real ComfyUI server; nothing leaks, nothing is reused.

    python tests/soak.py N [--keep DIR] [--window W] [--inject-leak-mb MB] [--no-replay]

Starts a server (tiny models), queues N Stand-In prompts back to back through POST /prompt
with alternating references (a face, a cat), resolutions, seeds and both example graphs
(KSampler and Sample Video), and after each one a probe prompt that reports the server's
live tensors and the pack's per-generation objects. Then runs every one of the N prompts
again alone (after /free, so from scratch) and compares the sampled latents exactly. Prints a
line per prompt and ends with

    soak: prompts=N mismatches=M rss_growth_mb=X rss_growth_mb_per_prompt=S rss_slope_mb_per_prompt=T
          live_tensors_growth=Y ...

RSS moves by up to +-90 MB from one prompt to the next with no trend (allocator pools, the
sampler's buffers), so single samples cannot be compared. After a warm-up rotation, two
estimates of growth per prompt: the minimum RSS over the last window of W prompts (a rotation by
default) less the minimum over the first window, divided by the prompts between the windows'
starts (a leak raises every sample, so it raises the minimum; transient peaks do not), and the
Theil-Sen slope of all samples after warm-up (the median of the pairwise slopes: a few outliers
do not move it). RSS fails only when both exceed the bound: on simulated series of 40 prompts
with +-90 MB of noise and no trend that happens in about 1 % (uniform noise over the whole
range, the worst case tried; 0 % for upward spikes), while a leak of 4 MB per prompt is caught
in 87-99 % and one of 8 MB in 99.5-100 % (tests/test_soak_criterion.py). The pack's live tensors are compared between the
first and the last probe of the same phase of the rotation. Exit status 1 if any result
differs, any reference K/V outlived its prompt, growth exceeds the --max-* bounds, or after the
queue ComfyUI's cache holds a generation's K/V or more of the pack than one prompt held, or
anything of the pack remains after /free. ``--inject-leak-mb`` keeps that much alive in the
server at every prompt (a test-only node) to show the criterion catches a leak. (ComfyUI's RAM-pressure
cache, the default since 0.23, keeps the last prompts' outputs, the identity and the patched
model among them, until RAM runs short; the classic cache drops them at the next prompt.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "dev"))
sys.path.insert(0, HERE)

import comfyhost  # noqa: E402
import tiny_models  # noqa: E402
import workflows  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

FACE, CAT = "soak_face.png", "soak_cat.png"
SIZES = [(64, 64, 5), (80, 48, 5), (48, 96, 9)]
GRAPHS = ["standin_wan21_t2v_sample_video", "standin_wan21_t2v_ksampler"]
ROTATION = 12  # lcm of the alternations below: references 2, sizes 3, graphs 2 (x2 for phase)


def configuration(i: int) -> dict:
    width, height, length = SIZES[i % len(SIZES)]
    return {"graph": GRAPHS[(i // 2) % len(GRAPHS)], "image": FACE if i % 2 == 0 else CAT,
            "width": width, "height": height, "length": length, "seed": 1000 + i}


def prompt_for(i: int, probe: bool = True, leak_mb: int = 0) -> dict:
    c = configuration(i)
    p = tiny_models.tiny_variant(workflows.load_api(c["graph"]), dit=tiny_models.TINY_DIT,
                                 adapter=tiny_models.TINY_ADAPTER, vae=tiny_models.TINY_VAE,
                                 image=c["image"], width=c["width"], height=c["height"],
                                 length=c["length"], steps=2, seed=c["seed"],
                                 save_latent_prefix=f"soak/p{i:03d}")
    if probe:
        # Measured inside the prompt, once sampling is over: what the pack still holds while
        # ComfyUI's cache keeps this prompt's outputs (the identity, the patched model).
        sampler = p["90"]["inputs"]["samples"][0]
        p["91"] = {"class_type": "StandInTest_PackStats", "inputs": {"label": f"after {i}", "after": [sampler, 0]}}
    if leak_mb:
        p["92"] = {"class_type": "StandInTest_Leak", "inputs": {"mb": leak_mb, "after": [p["90"]["inputs"]["samples"][0], 0]}}
    return p


def rss_growth(rss: list, warm: int, window: int) -> tuple[float, float, tuple]:
    """(growth in MB, growth per prompt, (first window start, last window start)): the minimum RSS
    over the last ``window`` samples less the minimum over the first ``window`` after ``warm``."""
    first = warm
    last = max(first, len(rss) - window)
    growth = min(rss[last:last + window]) - min(rss[first:first + window])
    return growth, growth / max(1, last - first), (first, last)


def rss_slope(rss: list, warm: int) -> float:
    """Theil-Sen slope (MB per prompt) of the samples after ``warm``."""
    import statistics
    ys = rss[warm:]
    slopes = [(ys[j] - ys[i]) / (j - i) for i in range(len(ys)) for j in range(i + 1, len(ys))]
    return statistics.median(slopes) if slopes else 0.0


def rss_grows(rss: list, warm: int, window: int, bound: float) -> bool:
    return rss_growth(rss, warm, window)[1] > bound and rss_slope(rss, warm) > bound


def probe_alone(label: str) -> dict:
    return {"1": {"class_type": "StandInTest_PackStats", "inputs": {"label": label}}}


def probe_result(entry: dict, node: str) -> dict:
    return json.loads(entry["outputs"][node]["text"][0])


def latent_of(server: ComfyServer, entry: dict):
    import safetensors.torch
    for out in entry["outputs"].values():
        for item in out.get("latents", []):
            path = os.path.join(server.base_dir, item.get("type", "output"), item.get("subfolder", ""), item["filename"])
            return safetensors.torch.load_file(path)["latent_tensor"]
    raise RuntimeError(f"no latent saved: {json.dumps(entry['outputs'])[:500]}")


def rss_mb(server: ComfyServer) -> float:
    import psutil
    return psutil.Process(server.proc.pid).memory_info().rss / 2**20


def prepare(base: str) -> None:
    from PIL import Image
    from skimage import data
    comfyhost.setup_comfy(cpu=True)
    tiny_models.write_all(os.path.join(base, "models"))
    os.makedirs(os.path.join(base, "input"), exist_ok=True)
    Image.fromarray(data.astronaut()).save(os.path.join(base, "input", FACE))
    Image.fromarray(data.chelsea()).save(os.path.join(base, "input", CAT))


def run(n: int, base: str, max_rss_mb_per_prompt: float, max_tensors: int, log=print, window: int = ROTATION,
        leak_mb: int = 0, replay: bool = True) -> dict:
    prepare(base)
    server = ComfyServer(base, test_nodes=True).start()
    try:
        started = time.time()
        ids = [server.queue(prompt_for(i, leak_mb=leak_mb)) for i in range(n)]
        queued, probes, rss = [], [], []
        for i, pid in enumerate(ids):
            entry = server.wait(pid)
            if entry["status"]["status_str"] != "success":
                raise RuntimeError(f"prompt {i} failed: {entry['status']}")
            queued.append(latent_of(server, entry))
            probes.append(probe_result(entry, "91"))
            rss.append(rss_mb(server))
            c = configuration(i)
            graph = "SampleVideo" if "sample_video" in c["graph"] else "KSampler"
            log(f"prompt {i:3d} {graph:>11} {os.path.splitext(c['image'])[0][5:]:>4} "
                f"{c['width']}x{c['height']}x{c['length']} seed {c['seed']}: rss {rss[-1]:.0f} MB, "
                f"pack tensors {probes[-1]['pack_tensors']}, K/V objects {probes[-1]['per_generation_objects'] or 0}")
        queue_s = time.time() - started
        # What ComfyUI's cache keeps once the queue is done. The classic cache (ComfyUI before
        # 0.23, or --cache-classic) drops the previous prompt's outputs when another prompt
        # runs: then nothing of the pack remains. The RAM-pressure cache (the default since
        # 0.23) keeps them until RAM runs short: the identities and patched models of the
        # cached prompts stay, as any node's outputs do, but never a generation's K/V.
        cached = probe_result(server.run(probe_alone("cached")), "1")
        log(f"after the queue, ComfyUI's cache holding what it keeps: pack objects {cached['pack_objects'] or 0}, "
            f"pack tensors {cached['pack_tensors']}")
        # /free (free_memory) empties every cache: then nothing of the pack may remain.
        server.free()
        released = probe_result(server.run(probe_alone("released")), "1")
        log(f"after /free: pack objects {released['pack_objects'] or 0}, pack tensors {released['pack_tensors']}")

        mismatches = 0
        for i in range(n if replay else 0):
            server.free()
            alone = latent_of(server, server.run(prompt_for(i, probe=False)))
            if alone.shape != queued[i].shape or not bool((alone == queued[i]).all()):
                mismatches += 1
                log(f"prompt {i}: MISMATCH with the same prompt run alone")
        leaked = [i for i, p in enumerate(probes) if p["per_generation_objects"]]

        warm = min(ROTATION, n - 1)
        last = warm + ((n - 1 - warm) // ROTATION) * ROTATION
        growth, per_prompt, windows = rss_growth(rss, warm, window)
        result = {
            "prompts": n, "mismatches": mismatches, "leaked_kv_after": leaked,
            "held_while_cached": cached["pack_tensors"], "kv_while_cached": cached["per_generation_objects"],
            "held_after_free": released["pack_tensors"],
            "rss_growth_mb": round(growth, 1), "rss_growth_mb_per_prompt": round(per_prompt, 2),
            "rss_slope_mb_per_prompt": round(rss_slope(rss, warm), 2),
            "rss_windows": {"first": [windows[0], windows[0] + window], "last": [windows[1], windows[1] + window]},
            "live_tensors_growth": probes[last]["pack_tensors"] - probes[warm]["pack_tensors"],
            "rss_mb": [round(r) for r in rss], "live_tensors": [p["pack_tensors"] for p in probes],
            "compared_probes": (warm, last), "queue_seconds": round(queue_s, 1),
        }
        # The cache may keep outputs, but never more of the pack than a prompt itself held, and
        # never a generation's K/V.
        result["ok"] = (mismatches == 0 and not leaked and released["pack_tensors"] == 0
                        and not cached["per_generation_objects"]
                        and cached["pack_tensors"] <= max(p["pack_tensors"] for p in probes)
                        and not released["pack_objects"]
                        and not rss_grows(rss, warm, window, max_rss_mb_per_prompt)
                        and result["live_tensors_growth"] <= max_tensors)
        return result
    finally:
        server.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="number of prompts (40 or more for the real soak)")
    parser.add_argument("--keep", help="base directory to use and keep (default: a temporary one)")
    parser.add_argument("--max-rss-growth-mb-per-prompt", type=float, default=2.0,
                        help="RSS fails when both the growth of the window minima per prompt and the slope exceed it")
    parser.add_argument("--max-live-tensor-growth", type=int, default=0)
    parser.add_argument("--window", type=int, default=ROTATION,
                        help=f"prompts per RSS window (default {ROTATION}, one rotation of configurations)")
    parser.add_argument("--inject-leak-mb", type=int, default=0,
                        help="keep this many MiB alive in the server at every prompt (a test-only leak)")
    parser.add_argument("--no-replay", action="store_true", help="skip running every prompt again alone")
    args = parser.parse_args(argv)
    if args.n < ROTATION + 2 * args.window:
        parser.error(f"use at least {ROTATION + 2 * args.window} prompts (a warm-up rotation of {ROTATION}, then "
                     f"two windows of {args.window})")
    base = args.keep or tempfile.mkdtemp(prefix="standin-soak-")
    result = run(args.n, base, args.max_rss_growth_mb_per_prompt, args.max_live_tensor_growth, window=args.window,
                 leak_mb=args.inject_leak_mb, replay=not args.no_replay)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rss_mb", "live_tensors")}))
    print(f"rss_mb per prompt: {result['rss_mb']}")
    print(f"tensors held by the pack per prompt: {result['live_tensors']}")
    print(f"soak: prompts={result['prompts']} mismatches={result['mismatches']} "
          f"rss_growth_mb={result['rss_growth_mb']:.1f} rss_growth_mb_per_prompt={result['rss_growth_mb_per_prompt']:.2f} "
          f"rss_slope_mb_per_prompt={result['rss_slope_mb_per_prompt']:.2f} "
          f"live_tensors_growth={result['live_tensors_growth']} "
          f"held_while_cached={result['held_while_cached']} held_after_free={result['held_after_free']}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
