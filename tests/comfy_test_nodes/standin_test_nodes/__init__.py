"""Test-only ComfyUI nodes, loaded only into the servers the tests and the tiny demo start.

umT5-XXL, Wan's text encoder, has no tiny form; this node stands in for CLIPLoader +
CLIPTextEncode by turning a prompt into a deterministic random CONDITIONING of the width
Wan's text projection takes (4096).
"""

import hashlib

import torch


class TextToTestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "default": ""}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "Stand-In/testing"

    def encode(self, text, tokens=8):
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        g = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, 4096, generator=g), {}]],)


NODE_CLASS_MAPPINGS = {"StandInTest_TextToConditioning": TextToTestConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"StandInTest_TextToConditioning": "Text to Test Conditioning (Stand-In tests)"}


class PackStats:
    """What the server process holds right now: the Stand-In pack's objects and the tensors
    they keep alive (adapters, identities, patches, per-generation reference K/V caches).

    Tensors are counted through the pack's own objects because the garbage collector does
    not track tensors (nor the dicts that only hold tensors)."""

    PACK_CLASSES = {"StandInAdapter", "IdentityAdapter", "Identity", "StandInPatch", "StandInBlockPatch",
                    "RunCache", "ReferenceKV", "CallState", "Identities", "Person", "IdentitySpec", "Region",
                    "QueryGroup"}
    PER_GENERATION = {"RunCache", "ReferenceKV", "CallState", "QueryGroup"}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"label": ("STRING", {"default": ""})},
                "optional": {"after": ("*", {"tooltip": "Anything: the probe runs once it is computed."})}}

    RETURN_TYPES = ()
    FUNCTION = "stats"
    OUTPUT_NODE = True
    CATEGORY = "Stand-In/testing"

    @classmethod
    def IS_CHANGED(cls, label, after=None):
        return float("nan")  # never cached: every call measures

    @classmethod
    def VALIDATE_INPUTS(cls, input_types=None, **kwargs):
        return True  # "after" takes any type

    @staticmethod
    def _tensors(obj, seen, out, depth=0):
        if depth > 6 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            out.add(id(obj))
        elif isinstance(obj, torch.nn.Module):
            for t in list(obj.parameters()) + list(obj.buffers()):
                out.add(id(t))
        elif isinstance(obj, dict):
            for v in obj.values():
                PackStats._tensors(v, seen, out, depth + 1)
        elif isinstance(obj, (list, tuple, set)):
            for v in obj:
                PackStats._tensors(v, seen, out, depth + 1)
        elif hasattr(obj, "__dict__") and "standin" in type(obj).__module__:
            for v in vars(obj).values():
                PackStats._tensors(v, seen, out, depth + 1)

    def stats(self, label, after=None):
        import gc
        import json
        gc.collect()
        counts, tensors, seen = {}, set(), set()
        for obj in gc.get_objects():
            kind = type(obj)
            if kind.__name__ in self.PACK_CLASSES and "standin" in kind.__module__:
                counts[kind.__name__] = counts.get(kind.__name__, 0) + 1
                self._tensors(obj, seen, tensors)
        report = {"label": label, "pack_tensors": len(tensors), "pack_objects": counts,
                  "per_generation_objects": {k: v for k, v in counts.items() if k in self.PER_GENERATION}}
        return {"ui": {"text": [json.dumps(report)]}}


NODE_CLASS_MAPPINGS["StandInTest_PackStats"] = PackStats
NODE_DISPLAY_NAME_MAPPINGS["StandInTest_PackStats"] = "Pack Stats (Stand-In tests)"


class FaultAfterSampling:
    """Passes images through after doing one file-system action: a fault that appears while a
    generation runs (a certificate replaced, the audit log made a folder), so the tests can show
    what the labelled save does with a fault found only after sampling."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",),
                             "action": (["none", "mkdir", "copy", "write", "remove"],),
                             "path": ("STRING", {"default": ""}),
                             "source_or_text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "Stand-In/testing"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def run(self, images, action, path, source_or_text):
        import os
        import shutil
        if action == "mkdir":
            if os.path.isfile(path):
                os.remove(path)
            os.makedirs(path, exist_ok=True)
        elif action == "copy":
            shutil.copyfile(source_or_text, path)
        elif action == "write":
            with open(path, "w") as f:
                f.write(source_or_text)
        elif action == "remove":
            os.remove(path)
        return (images,)


NODE_CLASS_MAPPINGS["StandInTest_FaultAfterSampling"] = FaultAfterSampling
NODE_DISPLAY_NAME_MAPPINGS["StandInTest_FaultAfterSampling"] = "Fault After Sampling (Stand-In tests)"


_LEAKED = []


class Leak:
    """Keeps ``mb`` MiB alive for the life of the server at every call: an injected leak, so the
    soak's criterion can be shown to catch one (tests/soak.py --inject-leak-mb)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mb": ("INT", {"default": 8, "min": 0, "max": 4096})},
                "optional": {"after": ("*", {"tooltip": "Anything: the leak happens once it is computed."})}}

    RETURN_TYPES = ()
    FUNCTION = "leak"
    OUTPUT_NODE = True
    CATEGORY = "Stand-In/testing"

    @classmethod
    def IS_CHANGED(cls, mb, after=None):
        return float("nan")

    @classmethod
    def VALIDATE_INPUTS(cls, input_types=None, **kwargs):
        return True

    def leak(self, mb, after=None):
        _LEAKED.append(b"\x01" * (mb * 2**20))  # written, so resident
        return {}


NODE_CLASS_MAPPINGS["StandInTest_Leak"] = Leak
NODE_DISPLAY_NAME_MAPPINGS["StandInTest_Leak"] = "Leak (Stand-In tests)"
