"""Stand-In: identity-preserving video generation for ComfyUI's native Wan 2.1 / 2.2 models.

ComfyUI imports this folder as a custom node pack and calls ``comfy_entrypoint``. Outside
ComfyUI (test tools importing the folder), nothing that needs ComfyUI is imported.
"""

import importlib.util

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes.extension import comfy_entrypoint  # noqa: F401
