"""Cost of labelling: seconds to sign an 81-frame 832x480 MP4 (ComfyUI's own MP4 writer), the
bytes the manifest adds, seconds to verify, and one audit append.

    .venv/bin/python tests/bench_provenance.py [--repeats 7]

Prints medians; the shared machine is noisy, so compare figures from one run only.
"""

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "dev"))

import conftest  # noqa: E402  (ComfyUI on sys.path, the pack loaded as ComfyUI loads it)
import torch  # noqa: E402
from comfy_api.latest import InputImpl, Types  # noqa: E402

provenance = conftest.pack_module("engine.provenance.c2pa_label")
audit = conftest.pack_module("engine.provenance.audit")


def clip(n=81, h=480, w=832):
    """A moving colour gradient with a drifting disc and film grain: a file of the size a real
    generated clip has (a few MB), which is what signing hashes."""
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    frames = []
    gen = torch.Generator().manual_seed(0)
    for t in range(n):
        p = t / n
        r = (x + p) % 1.0
        g = (y * 0.8 + 0.2 * torch.sin(6.28 * (x + p)))
        b = ((x - 0.5 - 0.3 * math.cos(6.28 * p)) ** 2 + (y - 0.5) ** 2 < 0.02).float() * 0.8 + 0.1
        frame = torch.stack([r.expand(h, w), g.expand(h, w), b.expand(h, w)], -1)
        frames.append(frame + 0.035 * torch.randn(h, w, 3, generator=gen))
    return torch.stack(frames).clamp(0, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp()
    try:
        plain = os.path.join(tmp, "plain.mp4")
        t = time.perf_counter()
        InputImpl.VideoFromComponents(Types.VideoComponents(images=clip(), frame_rate=Fraction(16))).save_to(plain)
        encode = time.perf_counter() - t
        key = provenance.installation_key(os.path.join(tmp, "signing"))
        generation = {"seed": 42, "models": [{"name": "wan2.1_t2v_14B_fp16.safetensors", "sha256": "ab" * 32},
                                             {"name": "Stand-In_wan2.1_T2V_14B.ckpt", "sha256": "cd" * 32}],
                      "reference": {"sha256_rgb8": "ef" * 32}, "settings": {"13:StandIn_SampleVideo": {
                          "steps": 20, "cfg": 5.0, "sampler_name": "euler", "width": 832, "height": 480, "length": 81}}}
        sign_s, verify_s, added = [], [], set()
        for i in range(args.repeats):
            path = os.path.join(tmp, f"signed{i}.mp4")
            shutil.copyfile(plain, path)
            t = time.perf_counter()
            result = provenance.sign_file(path, generation, key)
            sign_s.append(time.perf_counter() - t)  # includes sign_file's own read-back check
            added.add(result.bytes_added)
            t = time.perf_counter()
            report = provenance.verify(path)
            verify_s.append(time.perf_counter() - t)
            assert report.ok, report.summary()
        log = audit.AuditLog(os.path.join(tmp, "audit"))
        append_s = []
        for i in range(args.repeats):
            t = time.perf_counter()
            log.append(dict(generation, i=i))
            append_s.append(time.perf_counter() - t)
        size = os.path.getsize(plain)
        print(f"bench_provenance: 81 frames 832x480 MP4 of {size} bytes (ComfyUI's writer, encoded in {encode:.1f} s)")
        print(f"sign_s={statistics.median(sign_s):.4f} verify_s={statistics.median(verify_s):.4f} "
              f"bytes_added={'/'.join(str(a) for a in sorted(added))} "
              f"relative_size={max(added) / size * 100:.3f}% audit_append_s={statistics.median(append_s):.4f} "
              f"repeats={args.repeats}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
