"""Identity Similarity: how well a video keeps the reference's face, frame by frame."""

from __future__ import annotations

import json
import logging

import torch

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ..engine.faces import detect as face, embed as face_embed, plot as similarity_plot
from .load_adapter import FOLDER
from .canvas_text import show_on_node
from .sockets import CATEGORY, NODE_PREFIX, IdentitySocket

log = logging.getLogger(__name__)


def _nan(v):
    return float("nan") if v is None else float(v)


def check_frames(images, name: str) -> None:
    if images is None or not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0 \
            or images.shape[1] == 0 or images.shape[2] == 0 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Identity Similarity: '{name}' must be an IMAGE batch (frames x height x width x "
                         f"channels), got {shape}. Connect the decoded video frames (VAE Decode's IMAGE).")


class IdentitySimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "IdentitySimilarity",
            display_name="Identity Similarity",
            category=CATEGORY,
            is_output_node=True,
            description=("Measures how well a video keeps the reference person's face: the cosine "
                         "similarity of face embeddings between the reference and the largest face of "
                         "every frame, with the share of frames where a face was found, mean, minimum "
                         "and 10th percentile, and a chart over time. Frames without a face are "
                         "reported, not scored. Compare seeds or strengths by their mean and p10."),
            inputs=[
                io.Image.Input("images", tooltip="The video frames (an IMAGE batch, e.g. from VAE Decode "
                                                 "or Sample Video)."),
                IdentitySocket.Input("identity", optional=True,
                                     tooltip="The reference from Encode Reference Face (its prepared 512x512 "
                                             "picture is used). Connect this or reference_image."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="Or a photo of the person (first image of the batch). Wins over "
                                       "identity when both are connected."),
                io.Combo.Input("embedder", options=list(face_embed.EMBEDDERS), default="auto",
                               tooltip=f"auto: ArcFace when {face_embed.ARCFACE_FILE} is in models/standin "
                                       "(numbers comparable with the papers'), else dlib's ResNet embedder "
                                       f"(optional packages: {face_embed.DLIB_INSTALL})."),
                io.Combo.Input("detector", options=[d for d in face.detector_choices() if d != "none"],
                               default="auto",
                               tooltip="Finds the faces: auto (YuNet when its file is in models/standin, else "
                                       "the bundled BlazeFace), or one detector."),
                io.Float.Input("threshold", default=0.0, min=0.0, max=1.0, step=0.005,
                               tooltip="Similarity at which a frame counts as the same person. 0 uses the "
                                       "embedder's calibrated value (dlib 0.92; see the README)."),
            ],
            outputs=[
                io.Image.Output("plot", display_name="plot", tooltip="Similarity over the frames, as a chart."),
                io.Float.Output("mean", display_name="mean",
                                tooltip="Mean similarity over frames with a face (NaN if none had one)."),
                io.Float.Output("minimum", display_name="minimum", tooltip="Lowest frame's similarity."),
                io.Float.Output("p10", display_name="p10",
                                tooltip="10th percentile: 90% of the frames with a face score at least this."),
                io.Float.Output("face_share", display_name="face_share",
                                tooltip="Share of frames in which a face was found (0-1)."),
                io.String.Output("report", display_name="report",
                                 tooltip="All figures and the per-frame scores as JSON (null = no face); "
                                         "connect Preview Any to read it, or save it to compare runs."),
            ],
        )

    @classmethod
    def execute(cls, images, identity=None, reference_image=None, embedder="auto", detector="auto",
                threshold=0.0) -> io.NodeOutput:
        check_frames(images, "images")
        if reference_image is not None:
            check_frames(reference_image, "reference_image")
            reference = reference_image[0]
        elif identity is not None:
            reference = identity.image[0]
        else:
            raise ValueError("Identity Similarity needs the reference: connect Encode Reference Face's identity "
                             "or a photo of the person to reference_image.")
        model_dirs = folder_paths.get_folder_paths(FOLDER)
        # Before the per-frame work: a missing embedder is an error with what to install.
        emb = face_embed.load_embedder(embedder, model_dirs)

        frames = images.detach().float().cpu().numpy()
        bar = comfy.utils.ProgressBar(len(frames))

        def progress(done, total):
            comfy.model_management.throw_exception_if_processing_interrupted()
            bar.update_absolute(done, total)

        try:
            score = face_embed.score_video(reference.detach().float().cpu().numpy(), frames, emb, detector,
                                           model_dirs, threshold=threshold if threshold > 0 else None,
                                           progress=progress)
        except face_embed.NoReferenceFace as e:
            raise ValueError(str(e)) from None
        for w in score.warnings:
            log.warning("Identity Similarity: %s", w)
        show_on_node(score.warnings)
        summary = score.summary()
        log.info("Identity Similarity:\n%s", summary)

        plot = torch.from_numpy(similarity_plot.plot_score(score)).float().div(255.0).unsqueeze(0)
        report = json.dumps(score.as_dict())
        shown = ui.PreviewImage(plot, cls=cls).as_dict()
        shown["text"] = (summary,)
        return io.NodeOutput(plot, _nan(score.mean), _nan(score.min), _nan(score.low), float(score.face_share),
                             report, ui=shown)

