"""Consent policy, labelled saves and the audit log through a real ComfyUI server process."""

import asyncio
import datetime
import json
import os
import shutil

import pytest

import conftest
import tiny_models
from comfy_server import ComfyServer
from conftest import FACE
from test_server_e2e import assert_success, error_message, output_files, tiny

provenance = conftest.pack_module("engine.provenance.c2pa_label")
audit = conftest.pack_module("engine.provenance.audit")

GRAPH = "standin_wan21_t2v_sample_video"
APPLY, SAMPLER, ENCODE = "11", "13", "8"


@pytest.fixture(scope="module")
def server(comfy_server):
    return comfy_server


def state_dir(server):
    return os.path.join(server.base_dir, "user", "__standin")


class Policy:
    """Writes the server's policy file for one test and removes it after (the server is shared)."""

    def __init__(self, server, **policy):
        self.path = os.path.join(state_dir(server), "policy.json")
        self.policy = policy

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            json.dump(self.policy, f)

    def __exit__(self, *exc):
        os.remove(self.path)


def audit_entries(server):
    log = audit.AuditLog(os.path.join(state_dir(server), "audit"))
    return audit.read(log.files())


def with_consent(prompt, valid_until):
    """A Consent Record node between Encode Reference Face and Apply (and the save)."""
    prompt["30"] = {"class_type": "StandIn_ConsentRecord", "inputs": {
        "identity": [ENCODE, 0], "subject": "Eileen Collins", "purpose": "demo video, internal",
        "valid_until": valid_until, "document_id": "NASA-PD-1", "document_sha256": ""}}
    prompt[APPLY]["inputs"]["identity"] = ["30", 0]
    prompt["21"]["inputs"]["identity"] = ["30", 0]
    return prompt


def test_policy_on_without_consent_is_refused_before_sampling(server):
    events = []

    async def record(event, session):
        events.append(event)

    with Policy(server, require_consent=True):
        prompt_id, final = asyncio.run(server.follow(tiny(GRAPH, seed=101), record, timeout=300))
        assert final["type"] == "execution_error"
        assert final["data"]["node_id"] == APPLY
        assert "requires a consent record" in final["data"]["exception_message"]
        assert "Consent Record node" in final["data"]["exception_message"]
        ran = [e["data"].get("node") for e in events if e["type"] == "executing"]
        assert SAMPLER not in ran and not [e for e in events if e["type"] == "progress"]
        node, message = error_message(server.wait(prompt_id))
        assert node == APPLY and "requires a consent record" in message

        # A valid record lets the same graph through, and its consent is in the manifest.
        until = (datetime.date.today() + datetime.timedelta(days=10)).isoformat()
        entry = server.run(with_consent(tiny(GRAPH, seed=101), until), timeout=300)
        assert_success(server, entry)
        (video,) = [f for f in output_files(server, entry) if f.endswith(".mp4")]
        report = provenance.verify(video)
        assert report.ok and report.ai_generated
        assert report.generation["consent"]["subject"] == "Eileen Collins"
        assert report.generation["consent"]["valid_until"] == until


def test_expired_consent_is_a_node_error_through_the_api(server):
    from comfy_server import PromptRejected
    prompt = with_consent(tiny(GRAPH, seed=102), "2020-01-31")
    with pytest.raises(PromptRejected) as err:
        server.queue(prompt)
    text = json.dumps(err.value.body["node_errors"]["30"])
    assert "expired on 2020-01-31" in text


def test_twenty_prompts_back_to_back_give_twenty_audit_lines(server, tmp_path):
    """Twenty prompts queued at once: ten on the shared server and ten on a second ComfyUI
    process writing to the same user directory, so appends really do race."""
    before, _ = audit_entries(server)
    second_base = str(tmp_path / "second")
    tiny_models.write_all(os.path.join(second_base, "models"))
    os.makedirs(os.path.join(second_base, "input"))
    shutil.copy(os.path.join(server.base_dir, "input", FACE), os.path.join(second_base, "input", FACE))
    second = ComfyServer(second_base, extra_args=["--user-directory", os.path.join(server.base_dir, "user")]).start()
    try:
        queued, seeds = [], {}
        for i in range(10):
            for srv in (server, second):
                seed = 500 + 2 * i + (srv is second)
                prompt_id = srv.queue(tiny(GRAPH, seed=seed, steps=1))
                queued.append((srv, prompt_id))
                seeds[prompt_id] = seed
        entries = {}
        for srv, prompt_id in queued:
            entry = srv.wait(prompt_id, timeout=600)
            assert_success(srv, entry)
            entries[prompt_id] = (srv, entry)
    finally:
        second.stop()
    after, broken = audit_entries(server)
    assert broken == 0
    new = [e for e in after if e not in before]
    by_prompt = {}
    for e in new:
        by_prompt.setdefault(e["prompt_id"], []).append(e)
    assert sorted(by_prompt) == sorted(entries) and all(len(v) == 1 for v in by_prompt.values())
    for prompt_id, (srv, entry) in entries.items():
        line = by_prompt[prompt_id][0]
        (video,) = [f for f in output_files(srv, entry) if f.endswith(".mp4")]
        assert line["outputs"][0]["sha256"] == provenance.sha256_file(video)
        assert line["reference"]["sha256_rgb8"] and line["consent"] is None
        assert {m["role"] for m in line["models"]} >= {"base_model", "standin_adapter", "vae"}
        assert all(m["sha256"] for m in line["models"])
        face = os.path.join(server.base_dir, "input", FACE)
        assert line["input_files"] == [{"name": FACE, "sha256": provenance.sha256_file(face), "node": "6",
                                        "class_type": "LoadImage"}]
        assert line["seed"] == seeds[prompt_id]


def test_the_new_nodes_are_listed_with_tooltips(server):
    info = server.get("/object_info")
    for node_id in ("StandIn_ConsentRecord", "StandIn_SaveLabelledVideo", "StandIn_SaveLabelledImage"):
        node = info[node_id]
        assert node["category"] == "Stand-In" and node["display_name"] and node["description"]
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(node["output_tooltips"])
    assert info["StandIn_SaveLabelledVideo"]["output_node"] is True
    assert info["StandIn_ConsentRecord"]["output"] == ["STANDIN_IDENTITY"]


TWO_PEOPLE = "standin_wan21_two_people"


def consent_for(prompt, node, encode, add, subject, valid_until):
    """A Consent Record between one person's Encode Reference Face and their Add Identity."""
    prompt[node] = {"class_type": "StandIn_ConsentRecord", "inputs": {
        "identity": [encode, 0], "subject": subject, "purpose": "demo video, internal",
        "valid_until": valid_until, "document_id": f"DOC-{node}", "document_sha256": ""}}
    prompt[add]["inputs"]["identity"] = [node, 0]
    return prompt


def test_two_people_policy_on_one_without_consent_is_refused_before_sampling(server):
    """The two-person template with the policy on: consent for person 1 only is refused at
    Apply, naming person 2, before the sampler runs; with both records the video is made and its
    manifest and audit line list both references with their consent."""
    from PIL import Image
    until = (datetime.date.today() + datetime.timedelta(days=10)).isoformat()
    mirrored = "standin_test_face_mirrored.png"
    Image.open(os.path.join(server.base_dir, "input", FACE)).transpose(Image.FLIP_LEFT_RIGHT).save(
        os.path.join(server.base_dir, "input", mirrored))
    events = []

    async def record(event, session):
        events.append(event)

    def graph(seed):
        prompt = tiny(TWO_PEOPLE, seed=seed)
        prompt["60"]["inputs"]["image"] = mirrored  # person 2: another photo, another sha256
        return consent_for(prompt, "30", "8", "63", "Eileen Collins", until)

    with Policy(server, require_consent=True):
        prompt_id, final = asyncio.run(server.follow(graph(103), record, timeout=300))
        assert final["type"] == "execution_error" and final["data"]["node_id"] == APPLY
        assert final["data"]["exception_message"].startswith("Person 2: ")
        assert "requires a consent record" in final["data"]["exception_message"]
        ran = [e["data"].get("node") for e in events if e["type"] == "executing"]
        assert "13" not in ran and not [e for e in events if e["type"] == "progress"]

        entry = server.run(consent_for(graph(103), "31", "61", "64", "Grace Hopper", until), timeout=300)
        assert_success(server, entry)
        (video,) = [f for f in output_files(server, entry) if f.endswith(".mp4")]
        report = provenance.verify(video)
        assert report.ok and report.ai_generated
        people = report.generation["identities"]
        assert [p["consent"]["subject"] for p in people] == ["Eileen Collins", "Grace Hopper"]
        assert [p["region"] for p in people] == ["left half", "right half"]
        shas = [p["reference"]["sha256_rgb8"] for p in people]
        assert len(set(shas)) == 2 and all(len(s) == 64 for s in shas)
        line = audit_entries(server)[0][-1]  # the last labelled save: this one
        assert line["outputs"][0]["sha256"] == provenance.sha256_file(video)
        assert [p["reference"]["sha256_rgb8"] for p in line["identities"]] == shas
