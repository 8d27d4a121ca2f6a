"""Registers the pack's nodes with ComfyUI (V3 extension API)."""

from comfy_api.latest import ComfyExtension, io


class StandInExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return []


async def comfy_entrypoint() -> StandInExtension:
    return StandInExtension()
