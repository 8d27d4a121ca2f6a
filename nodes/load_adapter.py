"""Load Identity Adapter: a Stand-In adapter file from ComfyUI's models/standin folder."""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..engine import weights as manifest
from .canvas_text import show_on_node
from ..engine.identity.adapter import SUPPORTED_EXT, AdapterError, load_adapter_file
from ..engine.identity.patch import make_adapter_patcher
from .sockets import CATEGORY, NODE_PREFIX, AdapterSocket, IdentityAdapter

log = logging.getLogger(__name__)

FOLDER = "standin"


def register_model_folder() -> None:
    """Add models/standin for adapter files, keeping every path the user configured
    (extra_model_paths.yaml is read before custom nodes load) and their order."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    folder_paths.add_model_folder_path(FOLDER, default, is_default=False)
    paths, extensions = folder_paths.folder_names_and_paths[FOLDER]
    if isinstance(extensions, set):
        extensions.update(SUPPORTED_EXT)
    else:
        folder_paths.folder_names_and_paths[FOLDER] = (paths, set(extensions) | set(SUPPORTED_EXT))


def missing_adapter_message(name: str) -> str:
    folders = ", ".join(folder_paths.get_folder_paths(FOLDER))
    return (f"Stand-In adapter '{name}' is not in the adapter folders ({folders}). "
            + manifest.where_to_get(name, FOLDER, folder_paths.models_dir))


class LoadIdentityAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "LoadIdentityAdapter",
            display_name="Load Identity Adapter",
            category=CATEGORY,
            description=("Loads a Stand-In identity adapter (the small LoRA that lets Wan keep a "
                         "person's face) from models/standin. Use the file made for your Wan model: "
                         "Wan 2.1 14B, or the _high and _low files for Wan 2.2 A14B's two experts."),
            inputs=[
                io.Combo.Input("adapter_name", options=folder_paths.get_filename_list(FOLDER),
                               tooltip="Adapter file in models/standin (.ckpt or .safetensors). "
                                       "Official files: huggingface.co/BowenXue/Stand-In."),
            ],
            outputs=[
                AdapterSocket.Output("adapter", display_name="adapter",
                                     tooltip="The validated Stand-In adapter; connect it to Apply Stand-In Identity."),
            ],
        )

    @classmethod
    def validate_inputs(cls, adapter_name):
        if not isinstance(adapter_name, str) or not adapter_name:
            return "Choose a Stand-In adapter file."
        if os.path.isabs(adapter_name) or ".." in adapter_name.replace("\\", "/").split("/"):
            return (f"'{adapter_name}' is refused: adapter names are file names inside the "
                    f"models/standin folder, not paths.")
        if adapter_name not in folder_paths.get_filename_list(FOLDER):
            return missing_adapter_message(adapter_name)
        return True

    @classmethod
    def execute(cls, adapter_name) -> io.NodeOutput:
        path = folder_paths.get_full_path(FOLDER, adapter_name)
        if path is None:
            raise FileNotFoundError(missing_adapter_message(adapter_name))
        try:
            adapter = load_adapter_file(path)
        except AdapterError as e:
            raise ValueError(str(e)) from None
        expected = manifest.find(adapter_name)
        if expected is not None and expected.structure:
            s = expected.structure
            if (adapter.spec.num_blocks, adapter.spec.dim, adapter.spec.rank) != (s["blocks"], s["dim"], s["rank"]):
                message = (f"{adapter_name} is named like the official {expected.base_model} adapter "
                           f"but holds {adapter.spec.describe()}")
                log.warning("%s", message)
                show_on_node([message])
        return io.NodeOutput(IdentityAdapter(adapter_name, adapter, make_adapter_patcher(adapter)))
