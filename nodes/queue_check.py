"""A bad value in one of the pack's nodes refuses the whole prompt at queue time.

ComfyUI validates each output node's branch on its own and runs the branches that pass: with a
missing adapter or a wrong video size, the reference preview still runs, the queue reports
"1 job completed" and the editor shows no dialog (a POST /prompt answered 200 with node_errors is
only logged by the frontend). The pack's check runs first through ComfyUI's on-prompt hook: when
one of its nodes refuses its typed-in values (the node's own ``validate_inputs``), the prompt's
targets are narrowed to the outputs that depend on that node. Every target then fails ComfyUI's
own validation, so the answer is HTTP 400 with the node's message, which the frontend shows in
its error dialog and on the node. Nothing is run, no model is loaded.
"""

from __future__ import annotations

import inspect
import logging

log = logging.getLogger(__name__)


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def node_problem(cls, inputs: dict):
    """The node class's validate_inputs answer for the typed-in values (links as None, as ComfyUI
    passes them at validation); None when it accepts them or cannot be asked."""
    fn = getattr(cls, "validate_inputs", None)
    if fn is None:
        return None
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    args = {}
    for name, value in inputs.items():
        if name in params or takes_all:
            args[name] = None if _is_link(value) else value
    try:
        answer = fn(**args)
    except ValueError as e:  # the node's refusal, raised so that ComfyUI reports it once
        return str(e)
    except Exception as e:  # a value of the wrong type: ComfyUI's own validation reports it
        log.debug("Stand-In prompt check: %s.validate_inputs raised %s", getattr(cls, "__name__", cls), e)
        return None
    return None if answer is True else str(answer)


# Combo values a saved workflow may hold that this installation no longer offers, and what they
# are mapped to (logged) instead of a bare "Value not in list".
REMOVED_VALUES = {"detector": {"haar": "auto"}}  # OpenCV 5 has no Haar cascades


def combo_options(cls) -> dict:
    """{input name: options} of the node's combo inputs."""
    try:
        schema = cls.define_schema()
    except Exception:
        return {}
    return {i.id: list(i.options) for i in schema.inputs if getattr(i, "options", None) is not None}


def map_removed_values(prompt: dict, pack_nodes: dict) -> list[str]:
    """Replaces REMOVED_VALUES that the node does not offer here; returns what was changed."""
    changed = []
    for node_id, node in prompt.items():
        cls = pack_nodes.get(node.get("class_type")) if isinstance(node, dict) else None
        inputs = node.get("inputs") if cls is not None else None
        if not isinstance(inputs, dict):
            continue
        options = None
        for name, mapping in REMOVED_VALUES.items():
            value = inputs.get(name)
            if isinstance(value, str) and value in mapping:
                options = combo_options(cls) if options is None else options
                offered = options.get(name)
                if offered and value not in offered and mapping[value] in offered:
                    inputs[name] = mapping[value]
                    changed.append(f"node {node_id} ({node['class_type']}): {name} '{value}' is not available here, "
                                   f"using '{mapping[value]}'")
    for line in changed:
        log.warning("Stand-In: %s (the workflow was saved where it was).", line)
    return changed


def narrow_to_refused(json_data: dict, pack_nodes: dict, is_output) -> dict:
    """The on-prompt hook: ``pack_nodes`` maps the pack's class_type names to their classes;
    ``is_output(class_type)`` says whether a node is an output node."""
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    if not isinstance(prompt, dict):
        return json_data
    map_removed_values(prompt, pack_nodes)
    bad = {}
    for node_id, node in prompt.items():
        cls = pack_nodes.get(node.get("class_type")) if isinstance(node, dict) else None
        if cls is not None and isinstance(node.get("inputs"), dict):
            problem = node_problem(cls, node["inputs"])
            if problem:
                bad[node_id] = problem
    if not bad:
        return json_data

    def upstream(node_id, seen):
        node = prompt.get(node_id)
        if not isinstance(node, dict) or node_id in seen:
            return seen
        seen.add(node_id)
        for value in (node.get("inputs") or {}).values():
            if _is_link(value):
                upstream(str(value[0]), seen)
        return seen

    targets = json_data.get("partial_execution_targets")
    outputs = [n for n, node in prompt.items() if isinstance(node, dict) and is_output(node.get("class_type"))]
    if targets is not None:
        outputs = [n for n in outputs if n in targets]
    refused = [n for n in outputs if upstream(n, set()) & set(bad)]
    if refused:
        log.info("Stand-In: refusing the whole prompt: %s", "; ".join(f"node {k}: {v}" for k, v in bad.items()))
        json_data["partial_execution_targets"] = refused
    return json_data


def install(pack_nodes: list) -> bool:
    """Registers the hook with the running ComfyUI server (none when nodes load without one)."""
    try:
        from server import PromptServer
        import nodes as comfy_nodes
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None or not hasattr(server, "add_on_prompt_handler"):
        return False
    by_type = {cls.define_schema().node_id: cls for cls in pack_nodes}

    def is_output(class_type):
        cls = comfy_nodes.NODE_CLASS_MAPPINGS.get(class_type)
        return cls is not None and getattr(cls, "OUTPUT_NODE", False) is True

    server.add_on_prompt_handler(lambda data: narrow_to_refused(data, by_type, is_output))
    return True
