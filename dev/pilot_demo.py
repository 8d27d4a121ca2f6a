#!/usr/bin/env python3
"""make pilot-demo: two local ComfyUI servers with the tiny models, a 16-video pilot across both.

    python dev/pilot_demo.py [--out out/pilot] [--keep-servers]

Writes the tiny random-weight models (dev/tiny_models.py) into two private base directories
(.pilot-demo/a, .pilot-demo/b), starts a ComfyUI on each, writes a plan of 2 people (scikit-image's
astronaut photo, matplotlib's Grace Hopper portrait, each with a consent record) x 2 prompts x 2
seeds x 2 identity strengths, and runs tools/pilot.py with both servers. The workflow is the
Sample Video template shrunk to the tiny models (5 frames, 64x64, 2 steps): the videos are noise
and their similarity figures mean nothing; the run shows the machinery. A second run into the
same --out queues nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # identity_media: the photographs

import tiny_models  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

WORKFLOW = "standin_wan21_t2v_sample_video"

PLAN = """# Written by dev/pilot_demo.py: 2 people x 2 prompts x 2 seeds x 2 strengths = 16 videos.
name = "pilot demo (tiny random models: the videos are noise)"
workflow = "tiny_workflow.json"
prompts = ["A woman talks to the camera in a softly lit study, calm gestures.",
           "A woman walks along a beach at sunset, looking at the sea."]
seeds = [1, 2]
min_motion = 0.0

[grid]
strength = [0.5, 1.0]

[[people]]
name = "Eileen Collins (astronaut)"
photo = "photos/astronaut.png"
[people.consent]
subject = "Eileen Collins (NASA portrait, public domain)"
purpose = "pilot demo of the Stand-In pack"
valid_until = "2099-12-31"
document_id = "DEMO-0001"

[[people]]
name = "Grace Hopper"
photo = "photos/grace_hopper.png"
[people.consent]
subject = "Grace Hopper (US Navy portrait, public domain)"
purpose = "pilot demo of the Stand-In pack"
valid_until = "2099-12-31"
document_id = "DEMO-0002"
"""


def say(text: str) -> None:
    print(f"[pilot-demo] {text}", flush=True)


def prepare(work: str, width=64, height=64, length=5, steps=2) -> str:
    """The tiny workflow, the two photos and the plan in ``work``; returns the plan's path."""
    from PIL import Image
    import identity_media
    with open(os.path.join(ROOT, "example_workflows", "api", f"{WORKFLOW}.json"), encoding="utf-8") as f:
        prompt = json.load(f)
    tiny = tiny_models.tiny_variant(prompt, dit=tiny_models.TINY_DIT, adapter=tiny_models.TINY_ADAPTER,
                                    vae=tiny_models.TINY_VAE, image="reference_face.png", width=width, height=height,
                                    length=length, steps=steps)
    os.makedirs(os.path.join(work, "photos"), exist_ok=True)
    with open(os.path.join(work, "tiny_workflow.json"), "w", encoding="utf-8") as f:
        json.dump(tiny, f, indent=1)
    Image.fromarray(identity_media.astronaut()).save(os.path.join(work, "photos", "astronaut.png"))
    Image.fromarray(identity_media.grace_hopper()).save(os.path.join(work, "photos", "grace_hopper.png"))
    path = os.path.join(work, "plan.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(PLAN)
    return path


def start_servers(work: str, count: int = 2) -> list:
    import comfyhost
    comfyhost.setup_comfy(cpu=True)  # to build the tiny models in ComfyUI's own classes
    servers = []
    for name in "ab"[:count]:
        base = os.path.join(work, name)
        tiny_models.write_all(os.path.join(base, "models"))
        servers.append(ComfyServer(base, test_nodes=True))
    started = time.time()
    try:
        for s in servers:
            s.start()
    except Exception:
        for s in servers:
            s.stop()
        raise
    say(f"{count} ComfyUI servers ready in {time.time() - started:.1f} s: " + ", ".join(s.url for s in servers))
    return servers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "pilot"))
    parser.add_argument("--work", default=os.path.join(ROOT, ".pilot-demo"))
    args = parser.parse_args(argv)
    work = os.path.abspath(args.work)
    plan = prepare(work)
    say(f"plan: {plan}")
    say("TINY RANDOM-WEIGHT models: the videos are noise and the similarity figures mean nothing.")
    servers = start_servers(work)
    try:
        import pilot
        argv = [plan, "--out", args.out]
        for s in servers:
            argv += ["--server", s.url]
        say("python tools/pilot.py " + " ".join(argv))
        return pilot.main(argv)
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
