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
fetches the optional YuNet detector.

Hugging Face files (https://huggingface.co/<repo>/resolve/<revision>/<path>) go through
huggingface_hub when it is installed (it comes with ComfyUI through transformers): HF_ENDPOINT
(a mirror) and the Hugging Face login (HF_TOKEN, or `hf auth login`) apply, a file already in the
Hugging Face cache is linked into place instead of downloaded, and the Hub's sha256 of the file
is checked where the manifest has none. Without huggingface_hub the same URLs are fetched with
urllib, still through HF_ENDPOINT and with HF_TOKEN. Other URLs (civitai, GitHub) use urllib.
No network (a name that does not resolve, a refused connection, no route) is said as such at
once, without retries.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
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


class NoNetwork(DownloadError):
    """The host cannot be reached at all: retrying now would fail the same way."""

    def __init__(self, message: str, host: str):
        super().__init__(message)
        self.host = host


HF_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
HF_DEFAULT_ENDPOINT = "https://huggingface.co"


def hf_endpoint() -> str:
    """The Hub to use: $HF_ENDPOINT (a mirror), read at each call, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def hf_file(url: str) -> dict | None:
    """repo_type, repo_id, revision and filename of a Hub file URL
    (https://huggingface.co/[datasets/|spaces/]<owner>/<name>/resolve/<revision>/<path>); None otherwise."""
    parsed = urllib.parse.urlparse(url)
    if parsed.hostname not in HF_HOSTS:
        return None
    parts = parsed.path.strip("/").split("/")
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces"):
        repo_type, parts = parts[0][:-1], parts[1:]
    if len(parts) < 5 or parts[2] != "resolve":
        return None
    return {"repo_type": repo_type, "repo_id": f"{parts[0]}/{parts[1]}",
            "revision": urllib.parse.unquote(parts[3]),
            "filename": urllib.parse.unquote("/".join(parts[4:]))}


def effective_url(url: str) -> str:
    """The URL actually fetched: a Hub file through HF_ENDPOINT when that names a mirror."""
    if hf_file(url) is None:
        return url
    parsed = urllib.parse.urlparse(url)
    return hf_endpoint() + parsed.path + (f"?{parsed.query}" if parsed.query else "")


def _hub():
    """huggingface_hub, or None: without it Hub files are fetched with urllib."""
    try:
        import huggingface_hub
        from huggingface_hub import file_download, utils
    except ImportError:
        return None
    needed = (getattr(huggingface_hub, "get_hf_file_metadata", None), getattr(huggingface_hub, "hf_hub_url", None),
              getattr(file_download, "http_get", None), getattr(utils, "build_hf_headers", None))
    return huggingface_hub if all(needed) else None


# What a socket error says when there is no way to the host; any of these fails the same way
# on a retry a second later, so they end the download at once.
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}
_DNS_TEXT = ("Name or service not known", "nodename nor servname", "getaddrinfo failed",
             "Temporary failure in name resolution", "No address associated with hostname")


def network_problem(exc: BaseException) -> str | None:
    """'name' (the host name does not resolve), 'refused' or 'unreachable' when an exception
    (urllib's, huggingface_hub's, or one they wrap) means the host cannot be reached at all."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror):
            return "name"
        if isinstance(e, ConnectionRefusedError):
            return "refused"
        if isinstance(e, OSError) and e.errno in _UNREACHABLE_ERRNOS:
            return "unreachable"
        text = str(e)
        if any(t in text for t in _DNS_TEXT):
            return "name"
        if "Connection refused" in text:
            return "refused"
        if "Network is unreachable" in text or "No route to host" in text:
            return "unreachable"
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
    return None


def no_network(kind: str, url: str) -> NoNetwork:
    host = urllib.parse.urlparse(url).hostname or url
    what = {"name": f"no network connection to {host} (the name {host} could not be resolved)",
            "refused": f"cannot connect to {host} (it refused the connection)",
            "unreachable": f"no network connection to {host} (there is no route to it)"}[kind]
    advice = "Check that this computer is online and, behind a proxy, that HTTPS_PROXY is set"
    if host in HF_HOSTS or url.startswith(hf_endpoint()):
        if os.environ.get("HF_ENDPOINT"):
            advice += (f"; HF_ENDPOINT is set to {os.environ['HF_ENDPOINT']}: check that mirror's address, or "
                       f"unset HF_ENDPOINT to use huggingface.co")
        else:
            advice += ("; where huggingface.co is blocked, set HF_ENDPOINT to a Hugging Face mirror you can reach "
                       "(for example HF_ENDPOINT=https://hf-mirror.com)")
    return NoNetwork(f"{what}. {advice}. Then run the command again (a partial download is resumed).", host)


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


def verify(path: str, entry: dict, hub: dict | None = None) -> None:
    """Raise DownloadError saying what does not match the manifest, or, for what the manifest
    leaves open, what the Hugging Face Hub said of the file (``hub``: size, sha256)."""
    hub = hub or {}
    size = os.path.getsize(path)
    if entry.get("size") is not None and size != entry["size"]:
        raise DownloadError(f"size mismatch: {size} bytes, the manifest says {entry['size']}")
    if entry.get("size") is None and hub.get("size") is not None and size != hub["size"]:
        raise DownloadError(f"size mismatch: {size} bytes, the Hub says {hub['size']}")
    if entry.get("sha256"):
        digest = sha256_of(path)
        if digest != entry["sha256"].lower():
            raise DownloadError(f"checksum mismatch: sha256 {digest}, the manifest says {entry['sha256']}")
    elif hub.get("sha256"):
        digest = sha256_of(path)
        if digest != hub["sha256"]:
            raise DownloadError(f"checksum mismatch: sha256 {digest}, the Hub says {hub['sha256']}")
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


class _NoAuthAcrossHosts(urllib.request.HTTPRedirectHandler):
    """urllib forwards every header on a redirect; the Hub sends large files to a CDN with a
    signed URL, where a token must not go (and a second credential is refused)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlparse(newurl).netloc != urllib.parse.urlparse(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_NoAuthAcrossHosts)


def _request(url: str, start: int, timeout: float):
    headers = {"User-Agent": "comfyui-standin-downloader/1"}
    if start:
        headers["Range"] = f"bytes={start}-"
    token = os.environ.get("HF_TOKEN")
    host = urllib.parse.urlparse(url).hostname
    if token and (host in HF_HOSTS or host == urllib.parse.urlparse(hf_endpoint()).hostname):
        headers["Authorization"] = f"Bearer {token}"
    return _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _retry_or_give_up(attempt: int, attempts: int, error: str, log) -> None:
    if attempt == attempts:
        raise DownloadError(f"gave up after {attempts} attempts ({error}); run the command again to resume")
    log(f"  interrupted ({error}); retrying ({attempt}/{attempts - 1})")
    time.sleep(min(2 ** attempt * 0.25, 5.0))


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
            kind = network_problem(e)
            if kind:
                raise no_network(kind, url) from None
            error = str(e)
        _retry_or_give_up(attempt, attempts, error, log)


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def hub_metadata(hub, ref: dict, name: str) -> tuple[str, dict]:
    """The resolve URL through HF_ENDPOINT and what the Hub says of the file: where its bytes are
    (``location``, after the Hub's redirect), size, sha256 (the LFS ETag) and commit."""
    endpoint = hf_endpoint()
    url = hub.hf_hub_url(ref["repo_id"], ref["filename"], repo_type=ref["repo_type"], revision=ref["revision"],
                         endpoint=endpoint)
    try:
        # The Hub's own HEAD: token from HF_TOKEN or the saved login, proxies from the environment,
        # no retries (a failure here is an answer, not a hiccup).
        meta = hub.get_hf_file_metadata(url)
    except Exception as e:  # huggingface_hub's errors differ between its versions
        kind = network_problem(e)
        if kind:
            raise no_network(kind, url) from None
        if type(e).__name__ == "OfflineModeIsEnabled":
            raise DownloadError(f"{name}: HF_HUB_OFFLINE is set and the file is not in the Hugging Face cache; "
                                f"unset HF_HUB_OFFLINE to download it") from None
        code = _status(e)
        if code in (401, 403) or type(e).__name__ in ("GatedRepoError", "RepositoryNotFoundError"):
            raise DownloadError(f"HTTP {code or 401} from {url}: the file needs a login (set HF_TOKEN) or "
                                f"is not public") from None
        if code == 404 or "EntryNotFound" in type(e).__name__:
            raise DownloadError(f"HTTP 404: {url} does not exist (the manifest may be out of date)") from None
        raise DownloadError(f"{url}: {e}") from None
    etag = (meta.etag or "").strip('"').lower()
    info = {"location": meta.location or url, "size": meta.size, "commit": meta.commit_hash,
            "sha256": etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None}
    return url, info


def fetch_hf(hub, url: str, info: dict, part: str, log, attempts: int = 5) -> None:
    """Download a Hub file into part with huggingface_hub's own transfer (``http_get``: Range
    resume and retries within the run), resuming what part holds from an earlier run."""
    # Not hf_hub_download: with local_dir it writes the repository's layout (split_files/vae/...)
    # and a .cache/huggingface folder into the models folder; into the cache it costs a second
    # copy of a 28 GB file (or a symlink that dies with the cache); and (huggingface_hub 2.4)
    # it deletes a partial download on any failure, so a transfer cut at 27 of 28 GB starts over.
    # Its parts (the HEAD above, http_get) keep the endpoint, the login and a resumable .part.
    from huggingface_hub import file_download, utils
    headers = utils.build_hf_headers()
    location = info["location"]
    if urllib.parse.urlparse(location).netloc != urllib.parse.urlparse(url).netloc:
        # The Hub sends LFS files to a CDN with a signed URL: the token stays with the Hub.
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    expected = info["size"]
    for attempt in range(1, attempts + 1):
        start = os.path.getsize(part) if os.path.exists(part) else 0
        if expected is not None and start > expected:
            log("  the partial file is longer than the file on the Hub; starting over")
            os.remove(part)
            start = 0
        if start:
            log(f"  resuming at {start} bytes")
        try:
            with open(part, "ab") as f:
                file_download.http_get(location, f, resume_size=start, headers=headers, expected_size=expected,
                                       displayed_filename=os.path.basename(part)[:-len(".part")])
            return
        except Exception as e:  # httpx or requests errors, by huggingface_hub version
            kind = network_problem(e)
            if kind:
                raise no_network(kind, location) from None
            code = _status(e)
            if code == 416 and start:
                return  # the partial file is already complete
            if code in (401, 403):
                raise DownloadError(f"HTTP {code} from {location}: the file needs a login (set HF_TOKEN) or "
                                    f"is not public") from None
            error = f"HTTP {code}" if code else (str(e).splitlines() or [type(e).__name__])[0]
        _retry_or_give_up(attempt, attempts, error, log)


def from_hf_cache(hub, ref: dict, part: str, log) -> bool:
    """Put a copy the Hugging Face cache already holds at part: a hard link (no second copy on
    disk) where the cache and the models folder share a file system, else a copy. False when the
    cache does not hold the file."""
    try:
        cached = hub.try_to_load_from_cache(ref["repo_id"], ref["filename"], revision=ref["revision"],
                                            repo_type=ref["repo_type"])
    except Exception:
        return False
    if not isinstance(cached, str) or not os.path.isfile(cached):
        return False
    blob = os.path.realpath(cached)
    if os.path.exists(part):
        os.remove(part)
    try:
        os.link(blob, part)
        log(f"  found in the Hugging Face cache; linked (no second copy): {blob}")
    except OSError:
        log(f"  found in the Hugging Face cache on another file system; copying {os.path.getsize(blob) / 2**30:.1f} "
            f"GB from {blob}")
        shutil.copyfile(blob, part)
    return True


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
    ref = hf_file(entry["url"])
    hub = _hub() if ref else None
    said = None
    if hub is not None:
        if from_hf_cache(hub, ref, part, log):
            try:
                verify(part, entry)
                os.replace(part, dest)
                log(f"{entry['name']}: verified and saved to {dest}")
                return dest
            except DownloadError as e:
                os.remove(part)
                log(f"  the cached copy fails verification ({e}); downloading")
        log(f"{entry['name']}: downloading {effective_url(entry['url'])}")
        url, said = hub_metadata(hub, ref, entry["name"])
        fetch_hf(hub, url, said, part, log, attempts=attempts)
    else:
        url = effective_url(entry["url"])
        log(f"{entry['name']}: downloading {url}")
        fetch(url, part, log, attempts=attempts)
    try:
        verify(part, entry, said)
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
    unreachable = {}  # host -> the files not tried because of it
    for entry in files:
        where = present_under(args.models_dir, entry)
        if args.dry_run:
            state = f"present ({where})" if where else f"missing -> {os.path.join(args.models_dir, entry['folder'], entry['name'])}"
            print(f"{entry['name']}: {state}  [{effective_url(entry['url'])}]")
            continue
        host = urllib.parse.urlparse(effective_url(entry["url"])).hostname
        if host in unreachable and not where:
            unreachable[host].append(entry["name"])
            failed += 1
            continue
        try:
            download(entry, args.models_dir, attempts=args.attempts)
        except NoNetwork as e:
            failed += 1
            unreachable.setdefault(host, [])
            print(f"error: {entry['name']}: {e}", file=sys.stderr)
        except DownloadError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
    for host, names in unreachable.items():
        if names:
            print(f"not tried, as {host} cannot be reached: {', '.join(names)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
