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
