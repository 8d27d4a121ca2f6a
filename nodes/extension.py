"""Registers the pack's nodes with ComfyUI (V3 extension API), in one place."""

from comfy_api.latest import ComfyExtension, io

from .add_identity import AddIdentity
from .apply_identity import ApplyRSACPM
from .apply_identity_raylight import ApplyIdentityRaylight
from .consent_record import ConsentRecord
from .encode_reference import EncodeReferenceFace
from .identity_similarity import IdentitySimilarity
from . import queue_check
from .load_adapter import LoadIdentityAdapter, register_model_folder
from .sample_video import SampleVideo
from .prepare_face_swap import PrepareFaceSwapVideo
from .face_swap_latent_mask import FaceSwapLatentMask
from .restore_background import RestoreBackground
from .save_labelled import SaveLabelledImage, SaveLabelledVideo

NODES = [LoadIdentityAdapter, EncodeReferenceFace, ApplyRSACPM, SampleVideo]
NODES += [PrepareFaceSwapVideo, FaceSwapLatentMask, RestoreBackground]
NODES.append(IdentitySimilarity)
NODES += [ConsentRecord, SaveLabelledVideo, SaveLabelledImage]  # consent, labelled output, audit
# Registered whether or not Raylight is installed: ComfyUI loads Raylight's folder after this one,
# so it cannot be looked for here; the node explains on use when it is missing.
NODES.append(ApplyIdentityRaylight)
NODES.append(AddIdentity)  # several people in one video


class StandInExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> StandInExtension:
    # ComfyUI 0.3.x does not call ComfyExtension.on_load; the folder must exist before the
    # node schemas (which list its files) are built.
    register_model_folder()
    # A refused value in a pack node refuses the whole prompt (see queue_check).
    queue_check.install(NODES)
    return StandInExtension()
