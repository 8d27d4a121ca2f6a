"""The pack's public interface: every node's id, inputs, outputs, and every template's API twin.

    python dev/node_interface.py            print it as JSON
    python dev/node_interface.py --write    write tests/data/node_interface.json

Node ids, socket names and types, and the API twins are what saved workflows and API users
depend on; ``tests/test_layout.py`` compares the running pack with the committed file, so a
change to any of them is a decision (rewrite the file), never an accident of refactoring.
Widget options and defaults are left out on purpose: they may change without breaking a
saved workflow.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
OUT = os.path.join(ROOT, "tests", "data", "node_interface.json")


def _type(t) -> str:
    return "COMBO" if isinstance(t, (list, tuple)) else str(t)


def node_interface(node_classes) -> dict:
    nodes = {}
    for cls in node_classes:
        info = cls.GET_NODE_INFO_V1()
        inputs = {}
        for section in ("required", "optional"):
            for name, spec in (info.get("input") or {}).get(section, {}).items():
                inputs[name] = {"type": _type(spec[0]), "section": section}
        nodes[info["name"]] = {
            "inputs": inputs,
            "outputs": [[_type(t), n] for t, n in zip(info.get("output") or [], info.get("output_name") or [])],
            "output_node": bool(info.get("output_node")),
            "category": info.get("category"),
        }
    return nodes


def api_twins(root: str = ROOT) -> dict:
    """sha256 of each API twin, as JSON with sorted keys (formatting does not count)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "example_workflows", "api", "*.json"))):
        with open(path, encoding="utf-8") as f:
            canonical = json.dumps(json.load(f), sort_keys=True, separators=(",", ":"))
        out[os.path.basename(path)] = hashlib.sha256(canonical.encode()).hexdigest()
    return out


def current(pack=None) -> dict:
    if pack is None:
        import comfyhost
        comfyhost.setup_comfy(cpu=True)
        pack = comfyhost.load_pack()
    extension = asyncio.run(pack.comfy_entrypoint())
    return {"nodes": node_interface(asyncio.run(extension.get_node_list())), "api_twins": api_twins()}


if __name__ == "__main__":
    data = current()
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if "--write" in sys.argv[1:]:
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        with open(OUT, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {OUT}: {len(data['nodes'])} nodes, {len(data['api_twins'])} API twins")
    else:
        sys.stdout.write(text)
