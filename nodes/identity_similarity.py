"""Identity Similarity: how well a video keeps the reference's face, frame by frame; with several
references, each person's face, matched one-to-one per frame, and the frames where people swapped
places or two faces look like one person."""

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


def _lowest(values) -> float:
    values = [v for v in values if v is not None]
    return min(values) if values else float("nan")


# Extra people: optional sockets after the original ones, so saved workflows keep their links and
# widget values; person 1 is identity / reference_image as before.
EXTRA_PEOPLE = (2, 3, 4)


def _reference(identity, reference_image, image_name: str, identity_name: str):
    """(the person's picture, the socket it came from), or None when neither is connected."""
    if reference_image is not None:
        check_frames(reference_image, image_name)
        return reference_image[0], image_name
    if identity is not None:
        return identity.image[0], identity_name
    return None


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
                         "reported, not scored. Compare seeds or strengths by their mean and p10. "
                         "Several people: connect each one's reference (identity_2 ... reference_image_4); "
                         "every frame's faces are matched one-to-one to the references, each person "
                         "gets their own figures and line on the chart, and frames where people swapped "
                         "places or two faces look like one person are reported."),
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
                *[i for k in EXTRA_PEOPLE for i in (
                    IdentitySocket.Input(f"identity_{k}", optional=True,
                                         tooltip=f"Person {k} in a video of several people: their reference "
                                                 "from Encode Reference Face. Optional."),
                    io.Image.Input(f"reference_image_{k}", optional=True,
                                   tooltip=f"Or a photo of person {k} (first image of the batch). Wins over "
                                           f"identity_{k} when both are connected."))],
            ],
            outputs=[
                io.Image.Output("plot", display_name="plot", tooltip="Similarity over the frames, as a chart."),
                io.Float.Output("mean", display_name="mean",
                                tooltip="Mean similarity over frames with a face (NaN if none had one). "
                                        "Several people: the lowest person's mean."),
                io.Float.Output("minimum", display_name="minimum",
                                tooltip="Lowest frame's similarity (several people: of anyone)."),
                io.Float.Output("p10", display_name="p10",
                                tooltip="10th percentile: 90% of the frames with a face score at least this. "
                                        "Several people: the lowest person's."),
                io.Float.Output("face_share", display_name="face_share",
                                tooltip="Share of frames in which a face was found (0-1). Several people: "
                                        "the lowest person's share."),
                io.String.Output("report", display_name="report",
                                 tooltip="All figures and the per-frame scores as JSON (null = no face); "
                                         "several people: an entry per person with boxes per frame, and "
                                         "the swapped and blended frames. Connect Preview Any to read it, "
                                         "or save it to compare runs."),
            ],
        )

    @classmethod
    def execute(cls, images, identity=None, reference_image=None, embedder="auto", detector="auto",
                threshold=0.0, **extra) -> io.NodeOutput:
        check_frames(images, "images")
        first = _reference(identity, reference_image, "reference_image", "identity")
        if first is None:
            raise ValueError("Identity Similarity needs the reference: connect Encode Reference Face's identity "
                             "or a photo of the person to reference_image.")
        others = [_reference(extra.get(f"identity_{k}"), extra.get(f"reference_image_{k}"), f"reference_image_{k}",
                             f"identity_{k}") for k in EXTRA_PEOPLE]
        people = [first] + [p for p in others if p is not None]
        model_dirs = folder_paths.get_folder_paths(FOLDER)
        # Before the per-frame work: a missing embedder is an error with what to install.
        emb = face_embed.load_embedder(embedder, model_dirs)

        frames = images.detach().float().cpu().numpy()
        bar = comfy.utils.ProgressBar(len(frames))

        def progress(done, total):
            comfy.model_management.throw_exception_if_processing_interrupted()
            bar.update_absolute(done, total)

        try:
            if len(people) > 1:
                score = face_embed.score_people(
                    [p.detach().float().cpu().numpy() for p, _ in people], frames, emb, detector, model_dirs,
                    threshold=threshold if threshold > 0 else None, progress=progress,
                    names=[name for _, name in people])
            else:
                score = face_embed.score_video(first[0].detach().float().cpu().numpy(), frames, emb, detector,
                                               model_dirs, threshold=threshold if threshold > 0 else None,
                                               progress=progress)
        except face_embed.NoReferenceFace as e:
            raise ValueError(str(e)) from None
        for w in score.warnings:
            log.warning("Identity Similarity: %s", w)
        show_on_node(score.warnings)
        summary = score.summary()
        log.info("Identity Similarity:\n%s", summary)

        if len(people) > 1:
            chart = similarity_plot.plot_people(score)
            # One number per output for the whole cast: the person the video kept worst.
            persons = score.people
            figures = (_lowest(p.mean for p in persons), _lowest(p.min for p in persons),
                       _lowest(p.low for p in persons), min(float(p.face_share) for p in persons))
        else:
            chart = similarity_plot.plot_score(score)
            figures = (_nan(score.mean), _nan(score.min), _nan(score.low), float(score.face_share))
        plot = torch.from_numpy(chart).float().div(255.0).unsqueeze(0)
        report = json.dumps(score.as_dict())
        shown = ui.PreviewImage(plot, cls=cls).as_dict()
        shown["text"] = (summary,)
        return io.NodeOutput(plot, *figures, report, ui=shown)
