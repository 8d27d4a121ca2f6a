"""Example workflows as the tests use them: reading, UI-to-API conversion, tiny variants."""

from __future__ import annotations

import copy
import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKFLOW_DIR = os.path.join(ROOT, "example_workflows")

SCALAR_WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Canvas-only nodes: the frontend never queues them.
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


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


def is_widget(spec) -> bool:
    """Whether an /object_info input spec is a widget on the canvas (its value is saved in
    widgets_values): scalars and combos, old-style (a list of options) or V3 dynamic combos."""
    opts = spec[1] if len(spec) > 1 else {}
    kind = spec[0]
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in SCALAR_WIDGETS or str(kind).startswith("COMFY_DYNAMICCOMBO")


def with_defaults(prompt: dict, object_info: dict) -> dict:
    """The prompt as this ComfyUI runs it: every widget input the prompt leaves out takes the
    node's default, as the canvas and the server do. Two prompts are the same graph when they
    are equal after this; it keeps a workflow saved with an older ComfyUI comparable with what
    a newer canvas queues for it (which adds the inputs that ComfyUI added, at their defaults)."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        declared = set()
        _fill_defaults(node["inputs"], object_info[node["class_type"]]["input"], "", declared)
        # Values the canvas sends for widgets of its own (e.g. a newer frontend's
        # "video-preview" on Load Video) are no input of the node: the server ignores them.
        for key in set(node["inputs"]) - declared:
            del node["inputs"][key]
    return out


def _fill_defaults(inputs: dict, sections: dict, prefix: str, declared: set) -> None:
    for section in ("required", "optional"):
        for name, spec in sections.get(section, {}).items():
            opts = spec[1] if len(spec) > 1 else {}
            key = prefix + name
            declared.add(key)
            if key not in inputs and is_widget(spec):
                if "default" in opts:
                    inputs[key] = opts["default"]
                elif opts.get("options") and isinstance(opts["options"][0], dict):
                    inputs[key] = opts["options"][0]["key"]
            # A V3 dynamic combo: the chosen option's own inputs are queued as "name.input".
            if str(spec[0]).startswith("COMFY_DYNAMICCOMBO") and key in inputs:
                for option in opts.get("options", []):
                    if option.get("key") == inputs[key]:
                        _fill_defaults(inputs, option.get("inputs", {}), key + ".", declared)


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """What the canvas queues for a UI workflow: links become [node, slot], widget values are
    read in the node definition's input order (seed control and upload widgets skipped)."""
    links = {l[0]: l for l in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) in (2, 4) or node["type"] in VIRTUAL_NODES:  # not queued
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
                widget = is_widget(spec)
                if widget:
                    if not values:
                        # A widget the saved workflow has no value for (an input a newer ComfyUI
                        # added, e.g. CreateVideo's bit_depth in 0.25): the canvas gives it its default.
                        if "default" not in opts:
                            raise AssertionError(f"node {node['id']} ({node['type']}): no value for {name} and no default")
                        values.append(opts["default"])
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
