"""The pilot plan: which workflow, people, prompts, seeds and settings; every combination one job.

A plan is a TOML file (read with the standard library's tomllib, Python 3.11+) or the same
structure as JSON. See docs/pilot_plan.toml for a commented example. Everything is checked when
the plan is read, before any server is contacted: an unknown node, an input the node does not
have, a photo that is not there or a malformed consent record stops the run with a message
saying what to fix.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field

from ..provenance import consent as consent_mod

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_DIR = os.path.join(ROOT, "example_workflows", "api")

APPLY = "StandIn_ApplyRSACPM"
ENCODE = "StandIn_EncodeReferenceFace"
CONSENT = "StandIn_ConsentRecord"
SAMPLERS = ("KSampler", "KSamplerAdvanced", "StandIn_SampleVideo")
CONSENT_FIELDS = ("subject", "purpose", "valid_until", "document_id", "document_sha256", "granted_on")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".webp", ".gif")

# Short names for the settings a pilot usually varies: (class types, input name).
ALIASES = {
    "strength": ((APPLY,), "strength"),
    "start_percent": ((APPLY,), "start_percent"),
    "end_percent": ((APPLY,), "end_percent"),
    "steps": (SAMPLERS, "steps"),
    "cfg": (SAMPLERS, "cfg"),
    "sampler_name": (SAMPLERS, "sampler_name"),
    "scheduler": (SAMPLERS, "scheduler"),
    "lora_strength": (("LoraLoaderModelOnly",), "strength_model"),
}
PLAN_KEYS = {"workflow", "people", "prompts", "seeds", "grid", "set", "prompt_node", "min_motion",
             "inflight", "embedder", "model_dirs", "job_timeout", "name"}


class PlanError(ValueError):
    """The plan cannot be run as written; the message says what to change."""


@dataclass
class Person:
    name: str
    photo: str                       # absolute path
    consent: dict | None             # the Consent Record fields, or None
    photo_sha256: str = ""

    @property
    def upload_name(self) -> str:
        """The photo's name on the servers: its content hash, so a re-run (or another person
        with the same file) reuses the upload and the job key follows the pixels, not the path."""
        ext = os.path.splitext(self.photo)[1].lower() or ".png"
        return f"pilot_{self.photo_sha256[:24]}{ext}"


@dataclass
class Job:
    key: str                         # sha256 of the resolved prompt (before the output prefix)
    person: Person
    prompt_text: str
    seed: int
    settings: dict                   # address -> value, the grid point
    prompt: dict                     # the API prompt to queue
    index: int = 0
    attempts: list = field(default_factory=list)   # (server, reason) of failed tries

    def describe(self) -> str:
        s = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.person.name} / seed {self.seed} / {s or 'defaults'} / {self.prompt_text[:40]!r}"


@dataclass
class Plan:
    path: str
    name: str
    workflow_name: str
    workflow: dict
    people: list
    prompts: list
    seeds: list
    grid: dict                       # address -> list of values
    fixed: dict                      # address -> value, applied to every job
    prompt_node: str | None
    min_motion: float
    inflight: int
    embedder: str
    job_timeout: float
    model_dirs: tuple = ()           # where the scorer looks for w600k_r50.onnx / dlib's .dat files
    jobs: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# Reading

def _read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise PlanError(f"Cannot read the plan {path}: {e}") from None
    if path.lower().endswith(".json"):
        try:
            return json.loads(raw)
        except ValueError as e:
            raise PlanError(f"The plan {path} is not valid JSON: {e}") from None
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise PlanError("TOML plans need Python 3.11 or newer (tomllib); write the plan as JSON instead.") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PlanError(f"The plan {path} is not valid TOML: {e}") from None


def _workflow(spec: str, base: str) -> tuple[str, dict]:
    candidates = [spec] if os.path.isabs(spec) else [os.path.join(base, spec)]
    candidates.append(os.path.join(API_DIR, spec if spec.endswith(".json") else spec + ".json"))
    for path in candidates:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                try:
                    data = json.load(f)
                except ValueError as e:
                    raise PlanError(f"The workflow {path} is not valid JSON: {e}") from None
            if isinstance(data, dict) and "nodes" in data and "links" in data:
                raise PlanError(f"The workflow {path} is a canvas (UI) workflow. The pilot needs the API form: in "
                                "ComfyUI use Workflow > Export (API), or take the twin in example_workflows/api/.")
            if not isinstance(data, dict) or not all(isinstance(n, dict) and "class_type" in n for n in data.values()):
                raise PlanError(f"The workflow {path} is not an API workflow (node id -> class_type, inputs).")
            return os.path.basename(path)[: -len(".json")] if path.endswith(".json") else path, data
    names = sorted(n[:-5] for n in os.listdir(API_DIR) if n.endswith(".json"))
    raise PlanError(f"Workflow {spec!r} not found (looked at {', '.join(candidates)}). Give a path to your API "
                    f"workflow, or one of: {', '.join(names)}.")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _person(item, i: int, base: str) -> Person:
    if not isinstance(item, dict) or not item.get("name") or not item.get("photo"):
        raise PlanError(f"people[{i}] needs a name and a photo (a path to the person's picture).")
    photo = item["photo"] if os.path.isabs(item["photo"]) else os.path.join(base, item["photo"])
    if not os.path.isfile(photo):
        raise PlanError(f"The photo of {item['name']} is not there: {photo}.")
    record = item.get("consent")
    if record is not None:
        unknown = set(record) - set(CONSENT_FIELDS)
        if unknown:
            raise PlanError(f"Consent of {item['name']}: unknown fields {sorted(unknown)}; the fields are "
                            f"{', '.join(CONSENT_FIELDS)}.")
        record = {k: str(record.get(k, "")) for k in CONSENT_FIELDS}
        try:
            consent_mod.make_record(**record)
        except consent_mod.ConsentError as e:
            raise PlanError(f"Consent of {item['name']}: {e}") from None
    return Person(name=str(item["name"]), photo=os.path.abspath(photo), consent=record,
                  photo_sha256=file_sha256(photo))


def load(path: str, min_motion: float | None = None) -> Plan:
    data = _read(path)
    base = os.path.dirname(os.path.abspath(path))
    unknown = set(data) - PLAN_KEYS
    if unknown:
        raise PlanError(f"The plan has unknown keys {sorted(unknown)}; known keys: {', '.join(sorted(PLAN_KEYS))}.")
    if "workflow" not in data:
        raise PlanError("The plan names no workflow (workflow = \"standin_wan21_t2v_sample_video\" or a path).")
    workflow_name, workflow = _workflow(str(data["workflow"]), base)
    people = [_person(p, i, base) for i, p in enumerate(data.get("people") or [])]
    if not people:
        raise PlanError("The plan has no people ([[people]] with name, photo and optionally consent).")
    if len({p.name for p in people}) != len(people):
        raise PlanError("Two people in the plan have the same name; names identify them in the results.")
    prompts = [str(p) for p in (data.get("prompts") or [])]
    seeds = data.get("seeds") or [0]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise PlanError(f"seeds must be whole numbers, got {seeds}.")
    grid = data.get("grid") or {}
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise PlanError(f"grid.{k} must be a non-empty list of values, e.g. {k} = [0.5, 1.0].")
    plan = Plan(path=os.path.abspath(path), name=str(data.get("name") or os.path.basename(path)),
                workflow_name=workflow_name, workflow=workflow, people=people, prompts=prompts,
                seeds=list(seeds), grid=dict(grid), fixed=dict(data.get("set") or {}),
                prompt_node=data.get("prompt_node"),
                min_motion=float(min_motion if min_motion is not None else data.get("min_motion", 0.0)),
                inflight=int(data.get("inflight", 2)), embedder=str(data.get("embedder", "auto")),
                job_timeout=float(data.get("job_timeout", 3600)),
                model_dirs=tuple(d if os.path.isabs(d) else os.path.join(base, d) for d in data.get("model_dirs", [])))
    if not any("filename_prefix" in n.get("inputs", {}) for n in workflow.values()):
        raise PlanError("The workflow saves nothing (no node with a filename_prefix): end it with Save Labelled Video "
                        "(or Save Video) so each job leaves a video to download and score.")
    if plan.inflight < 1:
        raise PlanError("inflight must be at least 1 (jobs queued on each server at a time).")
    plan.jobs = expand(plan)
    return plan


# ------------------------------------------------------------------------------------------
# Addressing nodes and inputs

def _titles(prompt: dict, nid: str) -> set:
    node = prompt[nid]
    names = {nid, node["class_type"]}
    title = (node.get("_meta") or {}).get("title")
    if title:
        names.add(title)
    return names


def resolve_address(prompt: dict, address: str) -> list[tuple[str, str]]:
    """(node id, input name) pairs an address names: a short name from ALIASES, or
    "<node>.<input>" where <node> is the node's title (``_meta.title``), class type or id."""
    if address in ALIASES:
        classes, name = ALIASES[address]
        hits = [(nid, name) for nid, n in prompt.items() if n["class_type"] in classes and name in n["inputs"]]
        if not hits:
            raise PlanError(f"'{address}' sets {name} on {' / '.join(classes)}, and the workflow has no such node "
                            f"with that input. Address the node as \"<title>.<input>\" instead.")
        return hits
    # The node part may itself contain dots (a title); the input part may too (a dynamic combo's
    # "name.option"), so every split is tried.
    parts = address.split(".")
    for cut in range(1, len(parts)):
        node_part, input_name = ".".join(parts[:cut]), ".".join(parts[cut:])
        nodes = [nid for nid in prompt if node_part in _titles(prompt, nid)]
        if nodes:
            hits = [(nid, input_name) for nid in nodes if input_name in prompt[nid]["inputs"]]
            if hits:
                return hits
            have = sorted({k for nid in nodes for k, v in prompt[nid]["inputs"].items() if not _is_link(v)})
            raise PlanError(f"'{address}': node {node_part!r} has no input {input_name!r}; its settings are "
                            f"{', '.join(have)}.")
    raise PlanError(f"'{address}' names no node of the workflow. Use \"<node title, class type or id>.<input>\" "
                    f"(e.g. \"StandIn_ApplyRSACPM.strength\") or one of {', '.join(ALIASES)}.")


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _set(prompt: dict, address: str, value) -> None:
    for nid, name in resolve_address(prompt, address):
        if _is_link(prompt[nid]["inputs"][name]):
            raise PlanError(f"'{address}' is connected to another node in the workflow, not a value to set.")
        prompt[nid]["inputs"][name] = value


def _consumers(prompt: dict, source: list) -> list[tuple[str, str]]:
    return [(nid, k) for nid, n in prompt.items() for k, v in n["inputs"].items()
            if _is_link(v) and str(v[0]) == str(source[0]) and v[1] == source[1]]


def _positive_text_nodes(prompt: dict) -> list[str]:
    """The nodes holding the positive prompt's text: followed upstream from every sampler's
    (or conditioning node's) ``positive`` input to the first node with a text input."""
    found = []
    for nid, node in prompt.items():
        link = node["inputs"].get("positive")
        if not _is_link(link):
            continue
        queue, seen = [str(link[0])], set()
        while queue:
            cur = queue.pop(0)
            if cur in seen or cur not in prompt:
                continue
            seen.add(cur)
            inputs = prompt[cur]["inputs"]
            if isinstance(inputs.get("text"), str):
                if cur not in found:
                    found.append(cur)
                continue
            for key in ("positive", "conditioning", "conditioning_1", "cond"):
                if _is_link(inputs.get(key)):
                    queue.append(str(inputs[key][0]))
    return found


def _new_id(prompt: dict, hint: int = 900) -> str:
    n = hint
    while str(n) in prompt:
        n += 1
    return str(n)


def _apply_person(prompt: dict, person: Person) -> None:
    encoders = [nid for nid, n in prompt.items() if n["class_type"] == ENCODE]
    if not encoders:
        raise PlanError("The workflow has no Encode Reference Face node: the pilot fills the person's photo into "
                        "the Load Image node that feeds it.")
    for enc in encoders:
        link = prompt[enc]["inputs"].get("image")
        if not _is_link(link) or prompt.get(str(link[0]), {}).get("class_type") != "LoadImage":
            raise PlanError(f"Encode Reference Face (node {enc}) does not take its image from a Load Image node; "
                            "connect a Load Image to it so the pilot can fill in each person's photo.")
        prompt[str(link[0])]["inputs"]["image"] = person.upload_name
    records = [nid for nid, n in prompt.items() if n["class_type"] == CONSENT]
    if person.consent is not None:
        if not records:
            # One Consent Record right after each encoder: everything that used the identity
            # (Apply, the labelled save) now gets it with the record attached.
            for enc in encoders:
                nid = _new_id(prompt)
                for cons, key in _consumers(prompt, [enc, 0]):
                    prompt[cons]["inputs"][key] = [nid, 0]
                prompt[nid] = {"class_type": CONSENT, "inputs": {"identity": [enc, 0]},
                               "_meta": {"title": "Consent Record (pilot)"}}
                records.append(nid)
        for nid in records:
            prompt[nid]["inputs"].update({k: person.consent.get(k, "") for k in CONSENT_FIELDS})
    else:
        # No record for this person: the workflow's own Consent Record (holding someone else's
        # fields, or none) is bypassed, and the server's policy decides.
        for nid in records:
            source = prompt[nid]["inputs"]["identity"]
            for cons, key in _consumers(prompt, [nid, 0]):
                prompt[cons]["inputs"][key] = list(source)
            del prompt[nid]


def prompt_key(prompt: dict) -> str:
    """The job key: sha256 of the prompt as queued, keys sorted, titles left out."""
    bare = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in prompt.items()}
    return hashlib.sha256(json.dumps(bare, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def output_prefix(key: str) -> str:
    return f"pilot/{key[:16]}"


def resolve(plan: Plan, person: Person, text: str | None, seed: int, settings: dict) -> dict:
    """The API prompt of one job."""
    p = copy.deepcopy(plan.workflow)
    for address, value in plan.fixed.items():
        _set(p, address, value)
    _apply_person(p, person)
    if text is not None:
        if plan.prompt_node:
            targets = [nid for nid in p if plan.prompt_node in _titles(p, nid)]
            if not targets or not all(isinstance(p[t]["inputs"].get("text"), str) for t in targets):
                raise PlanError(f"prompt_node {plan.prompt_node!r} names no node with a text input.")
        else:
            targets = _positive_text_nodes(p)
            if not targets:
                raise PlanError("No positive prompt text found (a sampler's positive input leading to a node with a "
                                "text input); name the node with prompt_node = \"<title or id>\".")
        for t in targets:
            p[t]["inputs"]["text"] = text
    seeded = 0
    for node in p.values():
        inputs = node["inputs"]
        for key in ("seed", "noise_seed"):
            if key in inputs and not _is_link(inputs[key]):
                if node["class_type"] == "KSamplerAdvanced" and inputs.get("add_noise") == "disable":
                    continue
                inputs[key] = seed
                seeded += 1
    if not seeded:
        raise PlanError("The workflow has no seed input to set (seed or noise_seed on a sampler).")
    for address, value in settings.items():
        _set(p, address, value)
    return p


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:40] or "person"


def expand(plan: Plan) -> list[Job]:
    """Every combination of person, prompt, seed and grid point, in a stable order."""
    addresses = list(plan.grid)
    points = [dict(zip(addresses, values)) for values in itertools.product(*(plan.grid[a] for a in addresses))]
    prompts = plan.prompts or [None]
    jobs, seen = [], {}
    for person, text, seed, point in itertools.product(plan.people, prompts, plan.seeds, points):
        prompt = resolve(plan, person, text, seed, point)
        key = prompt_key(prompt)
        if key in seen:
            raise PlanError(f"Two combinations give the same prompt ({seen[key]} and {person.name}, seed {seed}, "
                            f"{point}): a setting in the grid does not change the workflow, or a value repeats.")
        seen[key] = f"{person.name}, seed {seed}, {point}"
        for nid, node in prompt.items():
            if "filename_prefix" in node["inputs"] and not _is_link(node["inputs"]["filename_prefix"]):
                node["inputs"]["filename_prefix"] = output_prefix(key)
        text_used = text if text is not None else (next((prompt[t]["inputs"]["text"] for t in _positive_text_nodes(prompt)), ""))
        jobs.append(Job(key=key, person=person, prompt_text=text_used, seed=seed, settings=point, prompt=prompt,
                        index=len(jobs)))
    return jobs


def person_dir(person: Person) -> str:
    return _slug(person.name)
