#!/usr/bin/env python3
"""Download the weight files a workflow needs, as listed in weights_manifest.json.

    python tools/download_weights.py --workflow example_workflows/standin_wan21_t2v_sample_video.json
    python tools/download_weights.py --name Stand-In_wan2.1_T2V_14B.ckpt --models-dir /path/to/ComfyUI/models
    python tools/download_weights.py --workflow my.json --dry-run

Finds every manifest file named anywhere in the workflow (UI or API format), and for each one
that is missing under MODELS_DIR/<folder>/ downloads it:
* into ``<file>.part`` first, resuming a partial file with an HTTP Range request (also after
  a dropped connection, a few times);
* then verifies what the manifest knows: size, sha256, and for Stand-In adapters the adapter
  structure (blocks, width, rank), read the same way the node reads it;
* only a verified file is moved into place, so an existing good file is never replaced by a
  bad one; a file that fails verification is deleted and the reason printed.
Nothing is written outside MODELS_DIR/<folder>/ for the manifest's folders. MODELS_DIR defaults
to $COMFYUI_DIR/models, else to the models folder of the ComfyUI this pack is installed in
(custom_nodes/<pack>/ -> models/). A face detector set to auto or yunet in the workflow also
fetches the optional YuNet detector. HF_TOKEN, if set, is sent to huggingface.co.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_MANIFEST = os.path.join(ROOT, "weights_manifest.json")
ALLOWED_FOLDERS = {"standin", "diffusion_models", "text_encoders", "vae", "loras", "unet", "clip"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$")
CHUNK = 1 << 20


class DownloadError(Exception):
    pass


def _module(name: str, path: str):
    """The pack's adapter reader, loaded by path: the same validation the node applies, without
    importing ComfyUI."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def load_manifest(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("format") != 1:
        raise DownloadError(f"{path}: unsupported manifest format {data.get('format')!r}")
    files = data["files"]
    for entry in files:
        name, folder = entry["name"], entry["folder"]
        if not SAFE_NAME.match(name) or folder not in ALLOWED_FOLDERS:
            raise DownloadError(f"manifest entry {name!r} in folder {folder!r} refused: names must be plain "
                                f"file names and folders one of {sorted(ALLOWED_FOLDERS)}")
        if urllib.parse.urlparse(entry["url"]).scheme not in ("https", "http"):
            raise DownloadError(f"manifest entry {name}: only http(s) URLs are downloaded")
    return files


def strings_in(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from strings_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings_in(v)


def needed_files(workflow_paths: list[str], names: list[str], manifest: list[dict]) -> list[dict]:
    wanted = set(names)
    for path in workflow_paths:
        with open(path, encoding="utf-8") as f:
            workflow = json.load(f)
        wanted.update(os.path.basename(s.replace("\\", "/")) for s in strings_in(workflow))
        wanted.update(files_for_nodes(workflow))
    chosen = []
    for entry in manifest:
        if {entry["name"], *entry.get("aliases", [])} & wanted:
            chosen.append(entry)
    unknown = set(names) - {n for e in manifest for n in (e["name"], *e.get("aliases", []))}
    if unknown:
        raise DownloadError(f"not in the manifest: {', '.join(sorted(unknown))}")
    return chosen


def target_path(models_dir: str, entry: dict) -> str:
    folder = os.path.realpath(os.path.join(models_dir, entry["folder"]))
    path = os.path.realpath(os.path.join(folder, entry["name"]))
    if os.path.dirname(path) != folder:
        raise DownloadError(f"{entry['name']}: refusing to write outside {folder}")
    return path


def present_under(models_dir: str, entry: dict) -> str | None:
    for name in (entry["name"], *entry.get("aliases", [])):
        path = os.path.join(models_dir, entry["folder"], name)
        if os.path.isfile(path):
            return path
    return None


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str, entry: dict) -> None:
    """Raise DownloadError saying what does not match the manifest."""
    size = os.path.getsize(path)
    if entry.get("size") is not None and size != entry["size"]:
        raise DownloadError(f"size mismatch: {size} bytes, the manifest says {entry['size']}")
    if entry.get("sha256"):
        digest = sha256_of(path)
        if digest != entry["sha256"].lower():
            raise DownloadError(f"checksum mismatch: sha256 {digest}, the manifest says {entry['sha256']}")
    if path.endswith((".safetensors", ".sft")) or entry["name"].endswith((".safetensors", ".sft")):
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise DownloadError("not a safetensors file (truncated header)")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > 100 * 2**20 or 8 + n > size:
                raise DownloadError("not a safetensors file (bad header length)")
            try:
                json.loads(f.read(n))
            except ValueError as e:
                raise DownloadError(f"not a safetensors file (unreadable header: {e})") from None
    if entry.get("kind") == "standin_adapter" and entry.get("structure"):
        adapter = _module("standin_adapter_check", os.path.join(ROOT, "engine", "identity", "adapter.py"))
        try:
            sd = adapter.read_tensor_file(path, entry["name"])
            spec, _ = adapter.validate_state_dict(sd, entry["name"])
        except adapter.AdapterError as e:
            raise DownloadError(f"not a usable Stand-In adapter: {e}") from None
        s = entry["structure"]
        got = (spec.num_blocks, spec.dim, spec.rank)
        if got != (s["blocks"], s["dim"], s["rank"]):
            raise DownloadError(f"adapter structure {got} (blocks, width, rank) is not the expected "
                                f"{(s['blocks'], s['dim'], s['rank'])}")


def _request(url: str, start: int, timeout: float):
    headers = {"User-Agent": "comfyui-standin-downloader/1"}
    if start:
        headers["Range"] = f"bytes={start}-"
    token = os.environ.get("HF_TOKEN")
    if token and urllib.parse.urlparse(url).hostname in ("huggingface.co", "www.huggingface.co"):
        headers["Authorization"] = f"Bearer {token}"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def fetch(url: str, part: str, log, attempts: int = 5, timeout: float = 60.0) -> None:
    """Download url into part, resuming whatever part already holds."""
    for attempt in range(1, attempts + 1):
        start = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            with _request(url, start, timeout) as r:
                if start and r.status != 206:
                    log("  the server ignored the resume request; starting over")
                    start = 0
                total = r.headers.get("Content-Length")
                total = int(total) + start if total is not None else None
                if start:
                    log(f"  resuming at {start} bytes")
                with open(part, "ab" if start else "wb") as f:
                    done = start
                    last = time.time()
                    while True:
                        block = r.read(CHUNK)
                        if not block:
                            break
                        f.write(block)
                        done += len(block)
                        if time.time() - last > 5:
                            last = time.time()
                            log(f"  {done / 2**20:.0f} MiB" + (f" of {total / 2**20:.0f} MiB" if total else ""))
                if total is not None and done < total:
                    raise DownloadError(f"connection closed at {done} of {total} bytes")
                return
        except urllib.error.HTTPError as e:
            if e.code == 416 and start:
                return  # the partial file is already complete
            if e.code in (401, 403):
                raise DownloadError(f"HTTP {e.code} from {url}: the file needs a login (set HF_TOKEN) or "
                                    f"is not public") from None
            if e.code == 404:
                raise DownloadError(f"HTTP 404: {url} does not exist (the manifest may be out of date)") from None
            error = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError, DownloadError) as e:
            error = str(e)
        if attempt == attempts:
            raise DownloadError(f"gave up after {attempts} attempts ({error}); run the command again to resume")
        log(f"  interrupted ({error}); retrying ({attempt}/{attempts - 1})")
        time.sleep(min(2 ** attempt * 0.25, 5.0))


def download(entry: dict, models_dir: str, log=print, attempts: int = 5) -> str:
    existing = present_under(models_dir, entry)
    if existing:
        try:
            verify(existing, entry)
            log(f"{entry['name']}: already present and verified ({existing})")
            return existing
        except DownloadError as e:
            # Keep it until a verified copy exists: a failed download must not cost the user
            # the file they had.
            log(f"{entry['name']}: the file present fails verification ({e}); fetching a fresh copy")
    dest = target_path(models_dir, entry)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    part = dest + ".part"
    log(f"{entry['name']}: downloading {entry['url']}")
    fetch(entry["url"], part, log, attempts=attempts)
    try:
        verify(part, entry)
    except DownloadError as e:
        os.remove(part)
        raise DownloadError(f"{entry['name']}: {e}; the downloaded file was deleted") from None
    os.replace(part, dest)
    log(f"{entry['name']}: verified and saved to {dest}")
    return dest


def pack_models_dir(pack_root: str = ROOT) -> str | None:
    """ComfyUI's models folder seen from the pack's own location: <ComfyUI>/custom_nodes/<pack>/
    -> <ComfyUI>/models (the path as invoked, so a pack linked into custom_nodes works too)."""
    custom_nodes = os.path.dirname(os.path.abspath(pack_root))
    if os.path.basename(custom_nodes) != "custom_nodes":
        return None
    models = os.path.join(os.path.dirname(custom_nodes), "models")
    return models if os.path.isdir(models) else None


def default_models_dir() -> str | None:
    comfy = os.environ.get("COMFYUI_DIR")
    if comfy:
        return os.path.join(os.path.abspath(os.path.expanduser(comfy)), "models")
    return pack_models_dir()


# Nodes that use the optional YuNet face detector when their detector is one of YUNET_DETECTORS,
# with the detector's position among the node's widgets in a UI workflow.
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_DETECTORS = ("auto", "yunet")
DETECTOR_WIDGET = {"StandIn_EncodeReferenceFace": 0, "StandIn_IdentitySimilarity": 1}


def dicts_in(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from dicts_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from dicts_in(v)


def files_for_nodes(workflow) -> set:
    """Files a workflow needs that no widget names: YuNet for a face detector set to auto or
    yunet (API format: inputs.detector; UI format, subgraphs included: the detector widget)."""
    wanted = set()
    for node in dicts_in(workflow):
        kind = node.get("class_type") or node.get("type")
        if kind not in DETECTOR_WIDGET:
            continue
        detector = "auto"  # the node's default
        if isinstance(node.get("inputs"), dict) and "detector" in node["inputs"]:
            detector = node["inputs"]["detector"]
        values = node.get("widgets_values")
        if isinstance(values, dict):
            detector = values.get("detector", detector)
        elif isinstance(values, list) and len(values) > DETECTOR_WIDGET[kind]:
            detector = values[DETECTOR_WIDGET[kind]]
        if detector in YUNET_DETECTORS:
            wanted.add(YUNET_FILE)
    return wanted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflow", action="append", default=[], help="workflow JSON (UI or API); repeatable")
    parser.add_argument("--name", action="append", default=[], help="a manifest file name; repeatable")
    parser.add_argument("--models-dir", default=default_models_dir(), help="ComfyUI's models folder (default: $COMFYUI_DIR/models, else the models folder "
                             "of the ComfyUI whose custom_nodes folder holds this pack)")
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST)
    parser.add_argument("--dry-run", action="store_true", help="list what is needed and missing; download nothing")
    parser.add_argument("--attempts", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.workflow and not args.name:
        parser.error("name a --workflow or a file with --name")
    if not args.models_dir:
        parser.error("name ComfyUI's models folder with --models-dir (or set COMFYUI_DIR): this pack is not "
                     "inside a ComfyUI custom_nodes folder next to a models folder")
    try:
        manifest = load_manifest(args.manifest)
        files = needed_files(args.workflow, args.name, manifest)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not files:
        print("the workflow names no file of the manifest")
        return 0
    failed = 0
    for entry in files:
        where = present_under(args.models_dir, entry)
        if args.dry_run:
            state = f"present ({where})" if where else f"missing -> {os.path.join(args.models_dir, entry['folder'], entry['name'])}"
            print(f"{entry['name']}: {state}  [{entry['url']}]")
            continue
        try:
            download(entry, args.models_dir, attempts=args.attempts)
        except DownloadError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
