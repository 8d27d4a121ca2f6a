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


# ------------------------------------------------------------------------------------
# Hugging Face files: a fake Hub (HF_ENDPOINT) and a fake CDN, both local
# ------------------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub:
    """A local stand-in for huggingface.co as huggingface_hub meets it: HEAD/GET on
    /<repo>/resolve/<revision>/<path> answer 302 to the CDN (another origin, as the real Hub's
    LFS files are), with X-Repo-Commit, X-Linked-Etag (the file's sha256) and X-Linked-Size; a
    missing file is 404 with X-Error-Code: EntryNotFound; ``token`` set makes the Hub answer 401
    to a request without it. The CDN serves /blobs/<sha256> with Range, and cuts a transfer
    after ``drop_after`` bytes once."""

    def __init__(self):
        self.files = {}         # (repo_id, filename) -> bytes announced by the Hub
        self.served = {}        # sha256 -> bytes the CDN sends (normally the same bytes)
        self.token = None
        self.requests = []      # (server, method, path, Authorization, Range)
        self.drop_after = {}    # sha256 -> bytes sent before the cut (once)

    def add(self, repo_id, filename, data, served=None):
        sha = hashlib.sha256(data).hexdigest()
        self.files[(repo_id, filename)] = data
        self.served[sha] = data if served is None else served
        return sha


def make_hub_servers(hub: Hub):
    def note(handler, server):
        hub.requests.append((server, handler.command, handler.path, handler.headers.get("Authorization"),
                             handler.headers.get("Range")))

    class HubHandler(httpserver.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, body):
            note(self, "hub")
            parts = self.path.split("?")[0].strip("/").split("/")
            if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                self.send_response(401)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("X-Error-Message", "Invalid credentials in Authorization header")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = None
            if len(parts) >= 5 and parts[2] == "resolve":
                data = hub.files.get((f"{parts[0]}/{parts[1]}", "/".join(parts[4:])))
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            sha = hashlib.sha256(data).hexdigest()
            text = b"Found. Redirecting"
            self.send_response(302)
            self.send_header("Location", f"{hub.cdn_base}/blobs/{sha}")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", '"0ca5ff1b0ca5ff1b0ca5ff1b0ca5ff1b0ca5ff1b"')
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            if body:
                self.wfile.write(text)

        def do_HEAD(self):
            self.answer(False)

        def do_GET(self):
            self.answer(True)

    class CdnHandler(httpserver.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            note(self, "cdn")
            sha = self.path.split("?")[0].rsplit("/", 1)[-1]
            data = hub.served.get(sha)
            if data is None:
                self.send_error(404)
                return
            start = 0
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = hub.drop_after.pop(sha, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    servers = [httpserver.ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (HubHandler, CdnHandler)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    return servers


@pytest.fixture
def hf(tmp_path, monkeypatch):
    """The fake Hub as HF_ENDPOINT, with an empty Hugging Face cache and no saved login."""
    import huggingface_hub.constants as hf_constants
    hub = Hub()
    hub_server, cdn_server = make_hub_servers(hub)
    hub.base = f"http://127.0.0.1:{hub_server.server_address[1]}"
    hub.cdn_base = f"http://127.0.0.1:{cdn_server.server_address[1]}"
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
                "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.base)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    yield hub
    for s in (hub_server, cdn_server):
        s.shutdown()


def hub_manifest(tmp_path, entries):
    """entries: (name, folder, huggingface.co URL path, size, sha256)."""
    files = [{"name": name, "folder": folder, "kind": "vae", "url": "https://huggingface.co" + path,
              "size": size, "sha256": sha} for name, folder, path, size, sha in entries]
    path = tmp_path / "hub_manifest.json"
    path.write_text(json.dumps({"format": 1, "files": files}))
    return str(path)


REPO = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
VAE_PATH = f"/{REPO}/resolve/main/split_files/vae/tiny_vae.safetensors"


def vae_bytes(seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    return safetensors.torch.save({"decoder.head.0.gamma": torch.randn(4, 1, 1, 1, generator=g)})


def test_hub_file_comes_through_hf_endpoint_into_the_models_folder(tmp_path, hf, capsys):
    data = vae_bytes()
    sha = hf.add(REPO, "split_files/vae/tiny_vae.safetensors", data)
    m = hub_manifest(tmp_path, [("tiny_vae.safetensors", "vae", VAE_PATH, None, None)])
    models = tmp_path / "models"
    assert run(["--name", "tiny_vae.safetensors", "--models-dir", str(models), "--manifest", m]) == 0
    assert (models / "vae" / "tiny_vae.safetensors").read_bytes() == data
    # Only the file: no repository folders (split_files/...), no .part, no .cache beside it.
    assert os.listdir(models / "vae") == ["tiny_vae.safetensors"]
    assert os.listdir(models) == ["vae"]
    hub_calls = [(m_, p) for s, m_, p, _, _ in hf.requests if s == "hub"]
    assert ("HEAD", VAE_PATH) in hub_calls
    assert [(m_, p) for s, m_, p, _, _ in hf.requests if s == "cdn"] == [("GET", f"/blobs/{sha}")]
    assert f"downloading {hf.base}{VAE_PATH}" in capsys.readouterr().out
    # Present and verified: nothing more is asked of the Hub.
    n = len(hf.requests)
    assert run(["--name", "tiny_vae.safetensors", "--models-dir", str(models), "--manifest", m]) == 0
    assert len(hf.requests) == n


def test_hub_download_resumes_after_a_cut_and_across_runs(tmp_path, hf, monkeypatch):
    import huggingface_hub.constants as hf_constants
    # huggingface_hub writes what it received in chunks of DOWNLOAD_CHUNK_SIZE (10 MB): a cut
    # resumes from the last whole chunk. Small chunks let a 100-byte file show it.
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 16)
    data = vae_bytes(1)
    assert len(data) > 64
    sha = hf.add(REPO, "split_files/vae/tiny_vae.safetensors", data)
    hf.drop_after[sha] = 32
    m = hub_manifest(tmp_path, [("tiny_vae.safetensors", "vae", VAE_PATH, None, None)])
    models = tmp_path / "models"
    assert run(["--name", "tiny_vae.safetensors", "--models-dir", str(models), "--manifest", m]) == 0
    assert (models / "vae" / "tiny_vae.safetensors").read_bytes() == data
    ranges = [r for s, _, _, _, r in hf.requests if s == "cdn"]
    assert ranges == [None, "bytes=32-"]

    # A .part left by an earlier run (interrupted, the command killed) is continued, not restarted.
    other = tmp_path / "other"
    (other / "vae").mkdir(parents=True)
    (other / "vae" / "tiny_vae.safetensors.part").write_bytes(data[:100])
    hf.requests.clear()
    assert run(["--name", "tiny_vae.safetensors", "--models-dir", str(other), "--manifest", m]) == 0
    assert (other / "vae" / "tiny_vae.safetensors").read_bytes() == data
    assert [r for s, _, _, _, r in hf.requests if s == "cdn"] == ["bytes=100-"]


def test_hf_token_goes_to_the_hub_and_not_to_the_cdn(tmp_path, hf, monkeypatch, capsys):
    data = vae_bytes(2)
    hf.add(REPO, "split_files/vae/tiny_vae.safetensors", data)
    hf.token = "hf_testtoken123"
    m = hub_manifest(tmp_path, [("tiny_vae.safetensors", "vae", VAE_PATH, None, None)])
    models = tmp_path / "models"
    assert run(["--name", "tiny_vae.safetensors", "--models-dir", str(models), "--manifest", m]) == 1
    assert "needs a login (set HF_TOKEN)" in capsys.readouterr().err
    assert not (models / "vae" / "tiny_vae.safetensors").exists()

    monkeypatch.setenv("HF_TOKEN", "hf_testtoken123")
    hf.requests.clear()
    assert run(["--name", "tiny_vae.safetensors", "--models-dir", str(models), "--manifest", m]) == 0
    assert (models / "vae" / "tiny_vae.safetensors").read_bytes() == data
    assert {a for s, _, _, a, _ in hf.requests if s == "hub"} == {"Bearer hf_testtoken123"}
    assert {a for s, _, _, a, _ in hf.requests if s == "cdn"} == {None}


def test_without_huggingface_hub_urllib_still_uses_hf_endpoint_and_the_token(tmp_path, hf, monkeypatch):
    data = vae_bytes(3)
    sha = hf.add(REPO, "split_files/vae/tiny_vae.safetensors", data)
    hf.token = "hf_testtoken123"
    monkeypatch.setenv("HF_TOKEN", "hf_testtoken123")
    monkeypatch.setattr(dw, "_hub", lambda: None)
    m = hub_manifest(tmp_path, [("tiny_vae.safetensors", "vae", VAE_PATH, None, None)])
    models = tmp_path / "models"
    assert run(["--name", "tiny_vae.safetensors", "--models-dir", str(models), "--manifest", m]) == 0
    assert (models / "vae" / "tiny_vae.safetensors").read_bytes() == data
    assert [(s, m_, p, a) for s, m_, p, a, _ in hf.requests] == [
        ("hub", "GET", VAE_PATH, "Bearer hf_testtoken123"), ("cdn", "GET", f"/blobs/{sha}", None)]


def test_the_hubs_sha256_checks_a_file_the_manifest_has_no_hash_for(tmp_path, hf, capsys):
    good = vae_bytes(4)
    bad = bytearray(good)
    bad[-3] ^= 0xFF
    sha = hf.add(REPO, "split_files/vae/tiny_vae.safetensors", good, served=bytes(bad))
    m = hub_manifest(tmp_path, [("tiny_vae.safetensors", "vae", VAE_PATH, None, None)])
    models = tmp_path / "models"
    assert run(["--name", "tiny_vae.safetensors", "--models-dir", str(models), "--manifest", m]) == 1
    err = capsys.readouterr().err
    assert f"the Hub says {sha}" in err and "deleted" in err
    assert os.listdir(models / "vae") == []


def test_a_file_in_the_hugging_face_cache_is_linked_not_downloaded(tmp_path, hf):
    import huggingface_hub.constants as hf_constants
    data = vae_bytes(5)
    sha = hf.add(REPO, "split_files/vae/tiny_vae.safetensors", data)
    repo_dir = os.path.join(hf_constants.HF_HUB_CACHE, "models--" + REPO.replace("/", "--"))
    os.makedirs(os.path.join(repo_dir, "blobs"))
    os.makedirs(os.path.join(repo_dir, "refs"))
    snapshot = os.path.join(repo_dir, "snapshots", COMMIT, "split_files", "vae")
    os.makedirs(snapshot)
    blob = os.path.join(repo_dir, "blobs", sha)
    with open(blob, "wb") as f:
        f.write(data)
    with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
        f.write(COMMIT)
    os.symlink(os.path.relpath(blob, snapshot), os.path.join(snapshot, "tiny_vae.safetensors"))
    m = hub_manifest(tmp_path, [("tiny_vae.safetensors", "vae", VAE_PATH, len(data), sha)])
    models = tmp_path / "models"
    assert run(["--name", "tiny_vae.safetensors", "--models-dir", str(models), "--manifest", m]) == 0
    saved = models / "vae" / "tiny_vae.safetensors"
    assert saved.read_bytes() == data
    assert os.stat(saved).st_ino == os.stat(blob).st_ino  # one copy on disk, two names
    assert hf.requests == []


def _closed_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("through", ["huggingface_hub", "urllib"])
def test_no_network_is_said_plainly_at_once(tmp_path, hf, monkeypatch, capsys, through):
    """An unresolvable host (.invalid never resolves, with or without a network) stops the
    download at the first try with what to do; the next file for that host is not tried."""
    if through == "urllib":
        monkeypatch.setattr(dw, "_hub", lambda: None)
    monkeypatch.setenv("HF_ENDPOINT", "https://nonexistent.invalid")
    m = hub_manifest(tmp_path, [("tiny_vae.safetensors", "vae", VAE_PATH, None, None),
                                ("other.safetensors", "vae", f"/{REPO}/resolve/main/other.safetensors", None, None)])
    models = tmp_path / "models"
    assert run(["--name", "tiny_vae.safetensors", "--name", "other.safetensors", "--models-dir", str(models),
                "--manifest", m]) == 1
    out, err = capsys.readouterr()
    assert "no network connection to nonexistent.invalid" in err
    assert "could not be resolved" in err and "HF_ENDPOINT" in err and "proxy" in err
    assert "not tried, as nonexistent.invalid cannot be reached: other.safetensors" in err
    assert "retrying" not in out + err and "gave up" not in err
    assert err.count("no network connection") == 1


def test_unreachable_non_hub_host_and_a_refused_connection(tmp_path, web, capsys):
    m = tmp_path / "m.json"
    port = _closed_port()
    m.write_text(json.dumps({"format": 1, "files": [
        {"name": "a.onnx", "folder": "standin", "kind": "face_detector", "url": "https://nonexistent.invalid/a.onnx"},
        {"name": "b.onnx", "folder": "standin", "kind": "face_detector", "url": f"http://127.0.0.1:{port}/b.onnx"}]}))
    assert run(["--name", "a.onnx", "--name", "b.onnx", "--models-dir", str(tmp_path / "models"),
                "--manifest", str(m)]) == 1
    out, err = capsys.readouterr()
    assert "no network connection to nonexistent.invalid (the name nonexistent.invalid could not be resolved)" in err
    assert "cannot connect to 127.0.0.1 (it refused the connection)" in err
    assert "HF_ENDPOINT" not in err  # a mirror of the Hub does not help for other hosts
    assert "retrying" not in out + err


def test_every_hub_url_of_the_manifest_maps_to_its_repo_revision_and_file(monkeypatch):
    import huggingface_hub
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    hub_entries = [e for e in dw.load_manifest(dw.DEFAULT_MANIFEST) if "huggingface.co" in e["url"]]
    assert len(hub_entries) >= 10
    for e in hub_entries:
        ref = dw.hf_file(e["url"])
        assert ref is not None, e["url"]
        assert ref["filename"].rsplit("/", 1)[-1] == e["name"]
        rebuilt = huggingface_hub.hf_hub_url(ref["repo_id"], ref["filename"], repo_type=ref["repo_type"],
                                             revision=ref["revision"], endpoint="https://huggingface.co")
        assert rebuilt == e["url"]
    assert dw.hf_file("https://huggingface.co/datasets/o/n/resolve/refs%2Fpr%2F3/a/b.bin") == {
        "repo_type": "dataset", "repo_id": "o/n", "revision": "refs/pr/3", "filename": "a/b.bin"}
    assert dw.hf_file("https://civitai.com/api/download/models/1587891") is None
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    assert dw.effective_url(hub_entries[0]["url"]) == hub_entries[0]["url"].replace(
        "https://huggingface.co", "https://mirror.example")
    assert dw.effective_url("https://github.com/x/y.onnx") == "https://github.com/x/y.onnx"


def test_a_file_missing_on_the_hub_says_the_manifest_may_be_out_of_date(tmp_path, hf, capsys):
    m = hub_manifest(tmp_path, [("gone.safetensors", "vae", f"/{REPO}/resolve/main/split_files/vae/gone.safetensors",
                                 None, None)])
    assert run(["--name", "gone.safetensors", "--models-dir", str(tmp_path / "models"), "--manifest", m]) == 1
    err = capsys.readouterr().err
    assert f"HTTP 404: {hf.base}/{REPO}/resolve/main/split_files/vae/gone.safetensors does not exist" in err
    assert "retrying" not in err
