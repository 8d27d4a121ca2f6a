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
