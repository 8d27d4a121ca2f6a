"""weights_manifest.json: the files our workflows need, where they go and where to get them.

Read by the nodes (to say which file is missing and where to get it) and by
tools/download_weights.py (which fetches them). Nothing here touches the network.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_PATH = os.path.join(PACK_ROOT, "weights_manifest.json")
DOWNLOAD_SCRIPT = os.path.join(PACK_ROOT, "tools", "download_weights.py")


@dataclass(frozen=True)
class ManifestFile:
    name: str
    folder: str
    url: str
    kind: str = ""
    base_model: str = ""
    description: str = ""
    size: int | None = None
    sha256: str | None = None
    structure: dict | None = None
    aliases: tuple = field(default_factory=tuple)

    def names(self):
        return (self.name, *self.aliases)


def load_manifest(path: str = MANIFEST_PATH) -> list[ManifestFile]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("format") != 1:
        raise ValueError(f"{path}: manifest format {data.get('format')!r} is not supported (1 is)")
    files = []
    for entry in data["files"]:
        files.append(ManifestFile(
            name=entry["name"], folder=entry["folder"], url=entry["url"], kind=entry.get("kind", ""),
            base_model=entry.get("base_model", ""), description=entry.get("description", ""),
            size=entry.get("size"), sha256=entry.get("sha256"), structure=entry.get("structure"),
            aliases=tuple(entry.get("aliases", ()))))
    return files


@lru_cache(maxsize=1)
def _default_manifest() -> tuple:
    return tuple(load_manifest())


def find(name: str, manifest=None) -> ManifestFile | None:
    base = os.path.basename(name.replace("\\", "/"))
    for f in manifest if manifest is not None else _default_manifest():
        if base in f.names():
            return f
    return None


def pack_dir_name() -> str:
    return os.path.basename(PACK_ROOT)


def pack_models_dir() -> str | None:
    """ComfyUI's models folder as tools/download_weights.py finds it from the pack's location."""
    custom_nodes = os.path.dirname(PACK_ROOT)
    if os.path.basename(custom_nodes) != "custom_nodes":
        return None
    models = os.path.join(os.path.dirname(custom_nodes), "models")
    return models if os.path.isdir(models) else None


def download_command(name: str, models_dir: str | None = None) -> str:
    """A command that fetches ``name`` as printed, from any folder: this Python (the one running
    ComfyUI, which has what the download's verification imports), the script's full path, and
    --models-dir when the models folder is not the one the script finds by itself."""
    args = [sys.executable or "python", DOWNLOAD_SCRIPT, "--name", name]
    if models_dir and (pack_models_dir() is None
                       or os.path.normcase(os.path.abspath(models_dir)) != os.path.normcase(pack_models_dir())):
        args += ["--models-dir", os.path.abspath(models_dir)]
    return subprocess.list2cmdline(args) if os.name == "nt" else shlex.join(args)


def where_to_get(name: str, folder_hint: str, models_dir: str | None = None) -> str:
    """One sentence telling the user where a missing file comes from and where it goes, ending
    with the command that downloads it."""
    entry = find(name)
    if entry is None:
        return (f"Put the file into ComfyUI's models/{folder_hint}/ folder (or a folder listed for "
                f"'{folder_hint}' in extra_model_paths.yaml) and press R to refresh.")
    return (f"{entry.name} ({entry.description}) goes into models/{entry.folder}/. Download it from "
            f"{entry.url} and press R to refresh, or run: {download_command(entry.name, models_dir)}")
