"""The pilot through real ComfyUI servers with the tiny models (5 frames, 64x64, 2 steps): every
job done once, a server killed mid-run, the command interrupted and re-run, a server refusing."""

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

import identity_media
import tiny_models
from comfy_server import ComfyServer
from conftest import ROOT

sys.path.insert(0, ROOT)
from engine.pilot import dispatch, plan as plan_mod, results  # noqa: E402

CONSENT = {"subject": "Eileen Collins", "purpose": "pilot test", "valid_until": "2099-12-31", "document_id": "T-1"}


def start_server(base):
    tiny_models.write_all(os.path.join(base, "models"))
    return ComfyServer(base, test_nodes=True).start()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The tiny workflow and two photographs."""
    d = tmp_path_factory.mktemp("pilot_work")
    wf = tiny_models.tiny_variant(plan_mod.json.load(open(os.path.join(plan_mod.API_DIR, "standin_wan21_t2v_sample_video.json"))),
                                  dit=tiny_models.TINY_DIT, adapter=tiny_models.TINY_ADAPTER, vae=tiny_models.TINY_VAE,
                                  image="x.png", width=64, height=64, length=5, steps=2)
    with open(d / "tiny.json", "w") as f:
        json.dump(wf, f)
    Image.fromarray(identity_media.astronaut()).save(d / "astronaut.png")
    Image.fromarray(identity_media.grace_hopper()).save(d / "hopper.png")
    return d


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started = []
    try:
        for name in ("a", "b"):
            started.append(start_server(str(tmp_path_factory.mktemp(f"pilot_server_{name}"))))
        yield started
    finally:
        for s in started:
            s.stop()


def write_plan(work, name, seeds, strengths=(0.5, 1.0), people=("astronaut", "hopper"), consent=("astronaut", "hopper")):
    plan = {"workflow": "tiny.json", "prompts": ["a person talks to the camera"], "seeds": list(seeds),
            "grid": {"strength": list(strengths)},
            "people": [dict({"name": p, "photo": f"{p}.png"}, **({"consent": dict(CONSENT, subject=p)} if p in consent else {}))
                       for p in people]}
    path = os.path.join(work, f"{name}.json")
    with open(path, "w") as f:
        json.dump(plan, f)
    return path


def run_pilot(plan_path, urls, out, **kw):
    plan = plan_mod.load(plan_path)
    pilot = dispatch.Pilot(plan, urls, out, stream=io.StringIO(), tty=False, **kw)
    return plan, pilot, asyncio.run(pilot.run())


def recorded(out):
    lines = results.read(os.path.join(out, results.RESULTS))
    return lines, [r["key"] for r in lines]


def test_every_job_done_once_across_two_servers_and_a_rerun_queues_nothing(work, servers, tmp_path):
    out = str(tmp_path / "out")
    plan, pilot, summary = run_pilot(write_plan(work, "all", seeds=[1, 2]), [s.url for s in servers], out)
    log = pilot.stream.getvalue()
    assert summary["queued"] == 8 and summary["done"] == 8 and summary["failed"] == 0, log
    lines, keys = recorded(out)
    assert sorted(keys) == sorted(j.key for j in plan.jobs)                      # each job once
    assert {r["server"] for r in lines} == {s.url for s in servers}               # both servers worked
    adapter_sha = hashlib.sha256(open(os.path.join(servers[0].base_dir, "models", "standin",
                                                   tiny_models.TINY_ADAPTER), "rb").read()).hexdigest()
    for r in lines:
        data = open(os.path.join(out, r["file"]), "rb").read()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert {"role": "standin_adapter", "name": tiny_models.TINY_ADAPTER, "sha256": adapter_sha} in r["models"]
        assert r["consent"] == {"status": "recorded", "in_manifest": True, "record": dict(CONSENT, subject=r["person"])}
        assert r["scores"]["frames"] == 5 and r["scores"]["size"] == "64x64"
        assert r["scores"]["motion"] > 0 and r["scores"]["time_s"] > 0
        assert set(r["settings"]) == {"strength"} and r["seed"] in (1, 2)
    # the same plan into the same folder: nothing is queued, nothing is added
    _, _, again = run_pilot(write_plan(work, "all", seeds=[1, 2]), [s.url for s in servers], out)
    assert again["queued"] == 0 and again["already_done"] == 8
    assert recorded(out)[1] == keys


def test_interrupted_then_rerun_queues_only_the_missing_jobs(work, servers, tmp_path):
    out = str(tmp_path / "out")
    plan_path = write_plan(work, "interrupt", seeds=[31, 32], strengths=(0.4, 0.7, 1.0), people=("astronaut",))
    cmd = [sys.executable, os.path.join(ROOT, "tools", "pilot.py"), plan_path, "--out", out, "--no-score"]
    for s in servers:
        cmd += ["--server", s.url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while len(recorded(out)[1]) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = recorded(out)[1]
    assert 2 <= len(before) < 6, output
    assert proc.returncode == 130 and "interrupted" in output, output
    plan, _, summary = run_pilot(plan_path, [s.url for s in servers], out, score=False)
    assert summary["already_done"] == len(before)
    assert sorted(summary["queued_keys"]) == sorted(set(j.key for j in plan.jobs) - set(before))
    after = recorded(out)[1]
    assert sorted(after) == sorted(j.key for j in plan.jobs) and len(after) == len(set(after)) == 6


def test_a_server_killed_mid_run_its_jobs_finish_on_the_other(work, servers, tmp_path):
    victim = start_server(str(tmp_path / "victim"))
    out = str(tmp_path / "out")
    plan = plan_mod.load(write_plan(work, "kill", seeds=[41, 42], people=("hopper",)))
    pilot = dispatch.Pilot(plan, [servers[0].url, victim.url], out, stream=io.StringIO(), tty=False, score=False)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("summary", asyncio.run(pilot.run())))
    thread.start()
    try:
        deadline = time.time() + 300
        state = None
        while time.time() < deadline and thread.is_alive():
            state = next((s for s in pilot.servers if s.url == victim.url), None)
            if state is not None and state.running >= 1 and sum(s.done for s in pilot.servers) >= 1:
                break
            time.sleep(0.05)
        assert state is not None and state.running >= 1, pilot.stream.getvalue()
        os.killpg(victim.proc.pid, signal.SIGKILL)  # the machine disappears: no goodbye
        thread.join(timeout=300)
    finally:
        victim.stop()
    assert not thread.is_alive()
    log = pilot.stream.getvalue()
    summary = box["summary"]
    assert summary["failed"] == 0 and summary["not_run"] == 0, log
    lines, keys = recorded(out)
    assert sorted(keys) == sorted(j.key for j in plan.jobs) and len(keys) == len(set(keys)) == 4, log
    moved = [r for r in lines if any(a["server"] == victim.url for a in r["attempts"])]
    assert moved and all(r["server"] == servers[0].url for r in moved), log
    assert state.moved == len(moved) and "moved" in log


def test_a_server_refusing_a_prompt_fails_that_job_with_its_reason(work, servers, tmp_path):
    server = servers[1]
    policy = os.path.join(server.base_dir, "user", "__standin", "policy.json")
    os.makedirs(os.path.dirname(policy), exist_ok=True)
    with open(policy, "w") as f:
        json.dump({"require_consent": True}, f)
    try:
        out = str(tmp_path / "out")
        plan, pilot, summary = run_pilot(write_plan(work, "refuse", seeds=[51], consent=("astronaut",)),
                                         [server.url], out, score=False)
    finally:
        os.remove(policy)
    assert summary["done"] == 2 and summary["failed"] == 2, pilot.stream.getvalue()
    lines, _ = recorded(out)
    assert {r["person"] for r in lines} == {"astronaut"}
    fails = results.read(os.path.join(out, results.FAILURES))
    assert {f["person"] for f in fails} == {"hopper"} and len(fails) == 2
    for f in fails:
        assert "requires a consent record" in f["reason"] and f["server"] == server.url, f
    from engine.pilot import report
    page = open(report.write(out, plan)[0], encoding="utf-8").read()
    assert "Failures (2)" in page and "requires a consent record" in page
    assert "2 job(s) failed for this person" in page and "were not scored" in page
