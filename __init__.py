"""Stand-In: identity-preserving video generation for ComfyUI's native Wan 2.1 / 2.2 models.

ComfyUI imports this folder as a package and calls ``comfy_entrypoint``. Anything else that
imports the file on its own (test collectors, linters) gets an empty module: nothing that
needs ComfyUI or a parent package is imported then.
"""

import importlib.util

# Browser extensions (web/*.js) ComfyUI serves to its frontend.
WEB_DIRECTORY = "./web"

if __package__ and importlib.util.find_spec("comfy_api") is not None:
    from .nodes.extension import comfy_entrypoint  # noqa: F401
