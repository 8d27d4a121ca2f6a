"""Speed and memory of face-swap preparation (not part of `make test`).

    .venv/bin/python tests/bench_face_swap.py [--frames 81] [--width 832] [--height 480]

Builds a video from scikit-image's astronaut moving (pan, zoom, rotation) at the official size,
runs the node's own function (Prepare Face Swap Video, aligned and box paste) and Restore
Background on it, and prints ms per frame and the peak resident memory the call added, as a
multiple of the input frames' size (the output frames and masks alone are 1.33x). Peak memory is
the kernel's high-water mark (VmHWM), reset before each call through /proc/self/clear_refs.
Wall time depends on what else runs on the machine; CPU time (all threads) less so. Ends with
one JSON line.
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
sys.path.insert(0, HERE)

import comfyhost  # noqa: E402


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn):
    import gc
    gc.collect()
    exact = reset_peak()
    before = rss_kb("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    seconds = time.perf_counter() - start
    measure.cpu_seconds = time.process_time() - cpu  # all threads; less sensitive to a busy machine
    peak = rss_kb("VmHWM")
    return result, seconds, (peak - before) * 1024, exact


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)

    comfyhost.setup_comfy(cpu=True)
    pack = comfyhost.load_pack()
    import importlib
    import logging

    import numpy as np
    import torch

    import face_swap_video as V
    logging.disable(logging.WARNING)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    face = importlib.import_module(f"{pack.__name__}.engine.faces.detect")
    objects = importlib.import_module(f"{pack.__name__}.nodes.sockets")
    prepare_face_swap = importlib.import_module(f"{pack.__name__}.nodes.prepare_face_swap")
    restore_background = importlib.import_module(f"{pack.__name__}.nodes.restore_background")

    frames8, _ = V.make_video(args.frames, args.width, args.height)
    images = torch.from_numpy(frames8).float().div_(255.0)
    del frames8
    input_bytes = images.numel() * images.element_size()
    prepared = face.prepare_reference(V.astronaut())
    identity = objects.Identity(latent=torch.zeros(1, 16, 1, 64, 64), image=torch.from_numpy(prepared.image)[None],
                                vae_kind="bench", latent_channels=16, alpha=torch.from_numpy(prepared.mask))
    figures = {"frames": args.frames, "width": args.width, "height": args.height,
               "input_mb": round(input_bytes / 2**20, 1)}
    with torch.inference_mode():
        prepare_face_swap.prepare(images[:5], identity)  # warm-up: OpenCV, the detector
        for mode, align in (("aligned", True), ("box", False)):
            times, peaks, cpus = [], [], []
            for _ in range(args.rounds):
                (out, masks, result), seconds, peak, exact = measure(
                    lambda: prepare_face_swap.prepare(images, identity, align=align))
                times.append(seconds / result.geometry.length * 1000)
                cpus.append(measure.cpu_seconds / result.geometry.length * 1000)
                peaks.append(peak)
                swapped = sum(1 for i in result.infos if i.face_box is not None)
                del out, masks, result
            figures[f"{mode}_ms_per_frame"] = round(statistics.median(times), 1)
            figures[f"{mode}_cpu_ms_per_frame"] = round(statistics.median(cpus), 1)
            figures[f"{mode}_peak_x_input"] = round(max(peaks) / input_bytes, 3)
            figures[f"{mode}_frames_swapped"] = swapped
            print(f"prepare ({mode}): {statistics.median(times):.1f} ms/frame (median of {args.rounds}; CPU time "
                  f"{statistics.median(cpus):.1f} ms/frame over all threads), "
                  f"face in {swapped}/{args.frames} frames, peak +{max(peaks) / 2**20:.0f} MB = "
                  f"{max(peaks) / input_bytes:.2f}x the input ({input_bytes / 2**20:.0f} MB)"
                  + ("" if exact else " [peak not reset: lifetime high-water mark]"))
        out, masks, _ = prepare_face_swap.prepare(images, identity)
        generated = out  # stands in for the sampled frames
        _, seconds, peak, _ = measure(
            lambda: restore_background.RestoreBackground.execute(generated, images, masks))
        figures["restore_ms_per_frame"] = round(seconds / out.shape[0] * 1000, 1)
        figures["restore_peak_x_input"] = round(peak / input_bytes, 3)
        print(f"restore background: {seconds / out.shape[0] * 1000:.1f} ms/frame, peak +{peak / 2**20:.0f} MB = "
              f"{peak / input_bytes:.2f}x the input")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
