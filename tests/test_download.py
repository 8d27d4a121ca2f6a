"""tools/download_weights.py against a local HTTP server that misbehaves on purpose."""

import hashlib
import http.server as httpserver
import io
import json
import os
import threading

import pytest
import safetensors.torch

import download_weights as dw
from wan_tiny import random_adapter_sd


class Files:
    """What the local server serves, and how it misbehaves."""

    def __init__(self):
        self.content = {}          # path -> bytes
        self.drop_after = {}       # path -> bytes sent before the connection is cut (once per entry)
        self.ignore_range = set()  # paths for which Range is ignored
        self.requests = []         # (path, Range header)


def make_server(files: Files):
    class Handler(httpserver.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            files.requests.append((self.path, self.headers.get("Range")))
            data = files.content.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and self.path not in files.ignore_range:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = files.drop_after.pop(self.path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    server = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def web(tmp_path):
    files = Files()
    server = make_server(files)
    files.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield files
    server.shutdown()


def adapter_bytes(blocks=2, dim=64, rank=8, seed=0):
    buf = io.BytesIO()
    buf.write(safetensors.torch.save(random_adapter_sd(blocks, dim, rank=rank, seed=seed)))
    return buf.getvalue()


def manifest(tmp_path, web, entries):
    data = {"format": 1, "files": []}
    for e in entries:
        e = dict(e)
        e["url"] = web.base + e.pop("path")
        data["files"].append(e)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    return str(path)


def entry(name, path, data=None, kind="standin_adapter", structure=(2, 64, 8), with_hash=True, folder="standin"):
    e = {"name": name, "path": path, "folder": folder, "kind": kind,
         "size": len(data) if (data is not None and with_hash) else None,
         "sha256": hashlib.sha256(data).hexdigest() if (data is not None and with_hash) else None}
    if structure:
        e["structure"] = dict(zip(("blocks", "dim", "rank"), structure))
    return e


def run(args):
    return dw.main(args)


def test_workflow_names_pick_the_files_and_a_clean_download_verifies(tmp_path, web):
    data = adapter_bytes()
    web.content["/a.safetensors"] = data
    m = manifest(tmp_path, web, [entry("good_adapter.safetensors", "/a.safetensors", data)])
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"7": {"class_type": "StandIn_LoadIdentityAdapter", "inputs": {"adapter_name": "good_adapter.safetensors"}}}))
    models = tmp_path / "models"
    assert run(["--workflow", str(wf), "--models-dir", str(models), "--manifest", m]) == 0
    saved = models / "standin" / "good_adapter.safetensors"
    assert saved.read_bytes() == data
    assert not (models / "standin" / "good_adapter.safetensors.part").exists()
    # A second run finds it present and verified, and downloads nothing.
    n = len(web.requests)
    assert run(["--workflow", str(wf), "--models-dir", str(models), "--manifest", m]) == 0
    assert len(web.requests) == n


def test_dropped_connection_resumes_with_range(tmp_path, web):
    data = adapter_bytes(seed=1)
    web.content["/a.safetensors"] = data
    web.drop_after["/a.safetensors"] = len(data) // 3
    m = manifest(tmp_path, web, [entry("resumed.safetensors", "/a.safetensors", data)])
    models = tmp_path / "models"
    assert run(["--name", "resumed.safetensors", "--models-dir", str(models), "--manifest", m]) == 0
    assert (models / "standin" / "resumed.safetensors").read_bytes() == data
    assert web.requests[0][1] is None
    assert web.requests[1][1] == f"bytes={len(data) // 3}-"


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path, web):
    data = adapter_bytes(seed=2)
    web.content["/a.safetensors"] = data
    m = manifest(tmp_path, web, [entry("partial.safetensors", "/a.safetensors", data)])
    folder = tmp_path / "models" / "standin"
    folder.mkdir(parents=True)
    (folder / "partial.safetensors.part").write_bytes(data[:1000])
    assert run(["--name", "partial.safetensors", "--models-dir", str(tmp_path / "models"), "--manifest", m]) == 0
    assert web.requests == [("/a.safetensors", "bytes=1000-")]
    assert (folder / "partial.safetensors").read_bytes() == data


def test_server_ignoring_range_restarts_cleanly(tmp_path, web):
    data = adapter_bytes(seed=3)
    web.content["/a.safetensors"] = data
    web.ignore_range.add("/a.safetensors")
    m = manifest(tmp_path, web, [entry("norange.safetensors", "/a.safetensors", data)])
    folder = tmp_path / "models" / "standin"
    folder.mkdir(parents=True)
    (folder / "norange.safetensors.part").write_bytes(b"x" * 500)  # not even the right bytes
    assert run(["--name", "norange.safetensors", "--models-dir", str(tmp_path / "models"), "--manifest", m]) == 0
    assert (folder / "norange.safetensors").read_bytes() == data


def test_wrong_bytes_are_deleted_and_reported(tmp_path, web, capsys):
    good = adapter_bytes(seed=4)
    bad = bytearray(good)
    bad[-10] ^= 0xFF
    web.content["/a.safetensors"] = bytes(bad)
    m = manifest(tmp_path, web, [entry("checked.safetensors", "/a.safetensors", good)])
    models = tmp_path / "models"
    assert run(["--name", "checked.safetensors", "--models-dir", str(models), "--manifest", m]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "deleted" in err
    assert list((models / "standin").iterdir()) == []


def test_size_mismatch_and_wrong_adapter_structure(tmp_path, web, capsys):
    web.content["/short.safetensors"] = adapter_bytes(seed=5)[:-100]
    other = adapter_bytes(blocks=3, dim=64, rank=8, seed=6)
    web.content["/other.safetensors"] = other
    e1 = entry("short.safetensors", "/short.safetensors", adapter_bytes(seed=5))
    e2 = entry("other.safetensors", "/other.safetensors", other, with_hash=False)
    m = manifest(tmp_path, web, [e1, e2])
    models = tmp_path / "models"
    assert run(["--name", "short.safetensors", "--name", "other.safetensors", "--models-dir", str(models), "--manifest", m]) == 1
    err = capsys.readouterr().err
    assert "size mismatch" in err
    assert "adapter structure (3, 64, 8)" in err and "(2, 64, 8)" in err
    assert list((models / "standin").iterdir()) == []


def test_existing_good_file_is_never_replaced_by_a_bad_download(tmp_path, web, capsys):
    good = adapter_bytes(seed=7)
    web.content["/a.safetensors"] = b"garbage" * 100
    m = manifest(tmp_path, web, [entry("kept.safetensors", "/a.safetensors", good)])
    folder = tmp_path / "models" / "standin"
    folder.mkdir(parents=True)
    (folder / "kept.safetensors").write_bytes(good)
    assert run(["--name", "kept.safetensors", "--models-dir", str(tmp_path / "models"), "--manifest", m]) == 0
    assert web.requests == []
    # A damaged copy is only replaced once a verified one exists; a bad download keeps it.
    damaged = good[:-1] + b"\x00"
    (folder / "kept.safetensors").write_bytes(damaged)
    assert run(["--name", "kept.safetensors", "--models-dir", str(tmp_path / "models"), "--manifest", m]) == 1
    assert (folder / "kept.safetensors").read_bytes() == damaged
    assert "fails verification" in capsys.readouterr().out


def test_names_that_would_leave_the_models_folder_are_refused(tmp_path, web, capsys):
    for name, folder in (("../../evil.safetensors", "standin"), ("ok.safetensors", "../../etc")):
        m = manifest(tmp_path, web, [entry(name, "/x", b"x", folder=folder)])
        assert run(["--name", name, "--models-dir", str(tmp_path / "models"), "--manifest", m]) == 2
        assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()
    assert web.requests == []


def test_dry_run_lists_missing_files_of_a_shipped_workflow(tmp_path, capsys):
    wf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_workflows",
                      "standin_wan22_a14b_two_experts.json")
    assert run(["--workflow", wf, "--models-dir", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in ("Stand-In_wan2.2_T2V_A14B_high.ckpt", "Stand-In_wan2.2_T2V_A14B_low.ckpt",
                 "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                 "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"):
        assert f"{name}: missing" in out
    assert "Stand-In_wan2.1_T2V_14B.ckpt" not in out
    assert not os.listdir(tmp_path)


def test_shipped_manifest_is_valid_and_matches_the_face_detector():
    import conftest
    face = conftest.pack_module("engine.faces.detect")
    files = dw.load_manifest(dw.DEFAULT_MANIFEST)
    by_name = {f["name"]: f for f in files}
    yunet = face.yunet_manifest_entry()
    assert {k: by_name[yunet["name"]][k] for k in yunet} == yunet
    adapters = [f for f in files if f["kind"] == "standin_adapter"]
    assert {f["name"] for f in adapters} == {"Stand-In_wan2.1_T2V_14B.ckpt", "Stand-In_wan2.2_T2V_A14B_high.ckpt",
                                             "Stand-In_wan2.2_T2V_A14B_low.ckpt"}
    assert all(f["structure"] == {"blocks": 40, "dim": 5120, "rank": 128} for f in adapters)
    assert all(f["url"].startswith("https://") for f in files)


# ------------------------------------------------------------------------------------
# The command as printed from a ComfyUI install; YuNet fetched for the face detector
# ------------------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def comfy_install(tmp_path):
    """A ComfyUI folder holding this pack as custom_nodes/comfyui-standin (a link, as a
    developer install would; the script must not resolve it)."""
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "models").mkdir()
    os.symlink(ROOT, comfy / "custom_nodes" / "comfyui-standin")
    return comfy


def test_models_folder_is_found_from_the_packs_location(tmp_path, monkeypatch):
    import subprocess
    import sys
    comfy = comfy_install(tmp_path)
    assert dw.pack_models_dir(str(comfy / "custom_nodes" / "comfyui-standin")) == str(comfy / "models")
    assert dw.pack_models_dir(str(tmp_path)) is None
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_DIR"}
    proc = subprocess.run([sys.executable, "custom_nodes/comfyui-standin/tools/download_weights.py", "--name",
                           "Stand-In_wan2.1_T2V_14B.ckpt", "--dry-run"], cwd=comfy, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = os.path.join(str(comfy), "models", "standin", "Stand-In_wan2.1_T2V_14B.ckpt")
    assert f"missing -> {expected}" in proc.stdout
    # COMFYUI_DIR still wins; outside custom_nodes without either, the error says what to pass.
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path / "other"))
    assert dw.default_models_dir() == str(tmp_path / "other" / "models")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "download_weights.py"), "--name",
                           "Stand-In_wan2.1_T2V_14B.ckpt", "--dry-run"], env=env, capture_output=True, text=True,
                          timeout=120)
    if dw.pack_models_dir() is None:  # this checkout is not itself inside a ComfyUI
        assert proc.returncode == 2 and "--models-dir" in proc.stderr and "custom_nodes" in proc.stderr


def shipped(name, api=False):
    return os.path.join(ROOT, "example_workflows", "api" if api else "", name)


@pytest.mark.parametrize("api", [False, True])
def test_workflow_with_an_auto_detector_fetches_yunet(tmp_path, web, api):
    yunet = b"yunet model bytes"
    web.content["/yunet.onnx"] = yunet
    m = manifest(tmp_path, web, [entry(dw.YUNET_FILE, "/yunet.onnx", yunet, kind="face_detector", structure=None)])
    with open(shipped("standin_wan21_t2v_sample_video.json", api)) as f:
        workflow = json.load(f)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(workflow))
    models = tmp_path / "models"
    assert run(["--workflow", str(wf), "--models-dir", str(models), "--manifest", m]) == 0
    assert (models / "standin" / dw.YUNET_FILE).read_bytes() == yunet

    # The same workflow with the detector set to one that does not use YuNet: not fetched.
    if api:
        for node in workflow.values():
            if node["class_type"] == "StandIn_EncodeReferenceFace":
                node["inputs"]["detector"] = "blazeface"
    else:
        for node in workflow["nodes"]:
            if node["type"] == "StandIn_EncodeReferenceFace":
                node["widgets_values"][0] = "blazeface"
    assert dw.files_for_nodes(workflow) == set()
    wf.write_text(json.dumps(workflow))
    other = tmp_path / "other"
    assert run(["--workflow", str(wf), "--models-dir", str(other), "--manifest", m]) == 0
    assert not (other / "standin" / dw.YUNET_FILE).exists()


def test_detector_widgets_of_both_face_nodes_in_ui_and_subgraphs():
    assert dw.files_for_nodes({"nodes": [{"type": "StandIn_IdentitySimilarity",
                                          "widgets_values": ["auto", "haar", 0.0]}]}) == set()
    assert dw.files_for_nodes({"definitions": {"subgraphs": [{"nodes": [
        {"type": "StandIn_IdentitySimilarity", "widgets_values": ["auto", "yunet", 0.0]}]}]}}) == {dw.YUNET_FILE}
    assert dw.files_for_nodes({"1": {"class_type": "StandIn_EncodeReferenceFace", "inputs": {}}}) == {dw.YUNET_FILE}
