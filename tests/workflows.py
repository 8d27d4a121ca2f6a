"""Example workflows as the tests use them: reading, UI-to-API conversion, tiny variants."""

from __future__ import annotations

import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKFLOW_DIR = os.path.join(ROOT, "example_workflows")

SCALAR_WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def ui_names() -> list[str]:
    return sorted(os.path.basename(p)[: -len(".json")] for p in glob.glob(os.path.join(WORKFLOW_DIR, "*.json")))


def api_names() -> list[str]:
    return sorted(os.path.basename(p)[: -len(".json")] for p in glob.glob(os.path.join(WORKFLOW_DIR, "api", "*.json")))


def load_api(name: str) -> dict:
    with open(os.path.join(WORKFLOW_DIR, "api", f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def load_ui(name: str) -> dict:
    with open(os.path.join(WORKFLOW_DIR, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """What the canvas queues for a UI workflow: links become [node, slot], widget values are
    read in the node definition's input order (seed control and upload widgets skipped)."""
    links = {l[0]: l for l in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) in (2, 4):  # muted / bypassed nodes are not queued
            continue
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values", []))
        inputs = {}
        order = info.get("input_order", {})
        for section in ("required", "optional"):
            for name in order.get(section, []):
                spec = info["input"][section][name]
                opts = spec[1] if len(spec) > 1 else {}
                widget = (isinstance(spec[0], list) or spec[0] in SCALAR_WIDGETS) and not opts.get("forceInput")
                if widget:
                    value = values.pop(0)
                    if opts.get("control_after_generate"):
                        values.pop(0)
                    if opts.get("image_upload"):
                        values.pop(0)
                    if name not in linked:
                        inputs[name] = value
                if name in linked:
                    l = linked[name]
                    inputs[name] = [str(l[1]), l[2]]
        if values:
            raise AssertionError(f"node {node['id']} ({node['type']}) has {len(values)} widget values left over: {values}")
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
