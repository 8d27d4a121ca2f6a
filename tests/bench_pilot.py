#!/usr/bin/env python3
"""What the pilot's machinery costs per video, against queueing the same prompts by hand.

    .venv/bin/python tests/bench_pilot.py [--videos 6] [--frames 5] [--size 64]

One ComfyUI server with the tiny models. After a warm-up prompt (models loaded), three batches
of N videos, each with its own seeds so ComfyUI's cache serves none of them:
  by hand:  the way README "Through the API" does it: upload the photo, POST every prompt, poll
            /history until each is done, GET /view each video into a folder;
  pilot:    tools/pilot.py's engine on the same kind of prompts, --no-score (upload, queue two at a
            time, websocket, download, C2PA read, results.jsonl);
  pilot + scores: the same with identity and motion scoring.
Prints the wall time per video of each, the ratios, and the CPU time this client process
spent per video (the machinery's own cost, which the shared machine's noise does not blur). The tiny models make generation itself
short, so the ratio shows the machinery at its most visible; with real models the same seconds
vanish next to minutes of sampling.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE, os.path.join(ROOT, "dev")]

import comfyhost  # noqa: E402


def by_hand(url: str, prompts: list, photo: str, photo_name: str, out: str) -> None:
    boundary = uuid.uuid4().hex
    data = open(photo, "rb").read()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{photo_name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + \
           f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n".encode()
    urllib.request.urlopen(urllib.request.Request(f"{url}/upload/image", data=body, method="POST",
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})).read()
    ids = []
    for p in prompts:
        req = urllib.request.Request(f"{url}/prompt", data=json.dumps({"prompt": p}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        ids.append(json.loads(urllib.request.urlopen(req).read())["prompt_id"])
    for i, pid in enumerate(ids):
        while True:
            h = json.loads(urllib.request.urlopen(f"{url}/history/{pid}").read())
            if pid in h and h[pid].get("status", {}).get("completed"):
                break
            time.sleep(0.25)
        for node_out in h[pid]["outputs"].values():
            for item in node_out.get("images", []) + node_out.get("videos", []):
                if item["filename"].endswith(".mp4"):
                    q = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
                    with open(os.path.join(out, f"{i}.mp4"), "wb") as f:
                        f.write(urllib.request.urlopen(f"{url}/view?{q}").read())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    comfyhost.setup_comfy(cpu=True)
    import identity_media
    import tiny_models
    from comfy_server import ComfyServer
    from PIL import Image
    from engine.pilot import dispatch, plan as plan_mod

    work = tempfile.mkdtemp(prefix="bench_pilot_")
    wf = tiny_models.tiny_variant(json.load(open(os.path.join(plan_mod.API_DIR, "standin_wan21_t2v_sample_video.json"))),
                                  dit=tiny_models.TINY_DIT, adapter=tiny_models.TINY_ADAPTER, vae=tiny_models.TINY_VAE,
                                  image="x.png", width=args.size, height=args.size, length=args.frames, steps=2)
    json.dump(wf, open(os.path.join(work, "tiny.json"), "w"))
    Image.fromarray(identity_media.astronaut()).save(os.path.join(work, "astronaut.png"))

    def plan(first_seed: int, n: int):
        path = os.path.join(work, f"plan_{first_seed}.json")
        json.dump({"workflow": "tiny.json", "prompts": ["a person talks"], "seeds": list(range(first_seed, first_seed + n)),
                   "people": [{"name": "astronaut", "photo": "astronaut.png"}]}, open(path, "w"))
        return plan_mod.load(path)

    base = os.path.join(work, "server")
    tiny_models.write_all(os.path.join(base, "models"))
    server = ComfyServer(base, test_nodes=True).start()
    n = args.videos
    try:
        warm = plan(9000, 1)
        by_hand(server.url, [j.prompt for j in warm.jobs], warm.people[0].photo, warm.people[0].upload_name,
                tempfile.mkdtemp(dir=work))

        hand_plan = plan(1000, n)
        t, c = time.perf_counter(), time.process_time()
        by_hand(server.url, [j.prompt for j in hand_plan.jobs], hand_plan.people[0].photo,
                hand_plan.people[0].upload_name, tempfile.mkdtemp(dir=work))
        hand = ((time.perf_counter() - t) / n, (time.process_time() - c) / n)

        timings = {}
        for label, first, scored in (("pilot", 2000, False), ("pilot + scores", 3000, True)):
            p = plan(first, n)
            pilot = dispatch.Pilot(p, [server.url], os.path.join(work, f"out_{first}"), score=scored,
                                   stream=io.StringIO(), tty=False)
            t, c = time.perf_counter(), time.process_time()
            summary = asyncio.run(pilot.run())
            timings[label] = ((time.perf_counter() - t) / n, (time.process_time() - c) / n)
            assert summary["done"] == n, pilot.stream.getvalue()
    finally:
        server.stop()
    print(f"bench_pilot: {n} videos each, {args.frames} frames {args.size}x{args.size}, tiny models, one server, "
          f"{os.cpu_count()} CPUs")
    print("  wall s/video = the whole batch over N (the server's sampling included); client CPU s/video = "
          "this process only (the machinery itself)")
    print(f"  by hand (POST all, poll /history, GET /view): wall {hand[0]:.2f}   client CPU {hand[1]:.3f}")
    for label, (wall, cpu) in timings.items():
        print(f"  {label:<15} wall {wall:.2f} (ratio {wall / hand[0]:.2f}, {wall - hand[0]:+.2f})   "
              f"client CPU {cpu:.3f} ({cpu - hand[1]:+.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
