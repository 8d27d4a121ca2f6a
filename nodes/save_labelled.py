"""Save Labelled Video / Image: ComfyUI's own saving, then a signed C2PA manifest saying the file
is AI-generated and what made it, plain metadata for players that do not read C2PA, and a line
in the audit log. Written and signed in a staging folder, logged, and only then placed in
output/ (engine/provenance/publish.py); on any failure the frames go to a quarantine folder."""

from __future__ import annotations

import datetime
import logging
import os

import torch

import folder_paths
from comfy.cli_args import args
from comfy_api.latest import InputImpl, Types, io, ui

from ..engine.provenance import c2pa_label as provenance, consent, policy as policy_schema, preflight, publish
from .consent_record import enforce, refuse_if_server_unready, state_dir
from .sockets import CATEGORY, NODE_PREFIX, Identities, IdentitySocket

log = logging.getLogger(__name__)

PLAIN_LABEL = ("AI-generated (digitalSourceType trainedAlgorithmicMedia) with Stand-In for ComfyUI; "
               "C2PA manifest embedded.")
# Containers C2PA can carry a manifest in, of those ComfyUI's video saving offers.
VIDEO_FORMATS = [f for f in Types.VideoContainer.as_input() if f in ("auto", "mp4", "mov")]


def _prompt_id() -> str | None:
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    context = get_executing_context()
    return getattr(context, "prompt_id", None)


def _resolve_input(name: str):
    try:
        path = folder_paths.get_annotated_filepath(name)
    except Exception:  # unusual annotations: the entry says the file was not found
        return None
    return path if os.path.isfile(path) else None


class Labeller:
    """What both save nodes do around ComfyUI's own saving."""

    def __init__(self, node_cls, identity):
        # The same checks as Apply ran before sampling: anything that changed since (an expired
        # record, a replaced certificate) is caught before a file is written. An expired record
        # is never written into a manifest as if valid; with several people, each one's.
        ready = preflight.server_checks(state_dir())
        people = identity.people if isinstance(identity, Identities) else ()
        if people:
            for person in people:
                enforce(person.identity, ready)
        elif identity is not None:
            enforce(identity, ready)
        self.policy = ready.policy
        self.state = state_dir()
        self.hidden = node_cls.hidden
        self.identity = identity
        self.key = ready.key
        cache = provenance.FileHashCache(os.path.join(self.state, "file_hashes.json"))
        self.generation = provenance.describe_generation(
            self.hidden.prompt, self.hidden.unique_id, resolve_model=folder_paths.get_full_path,
            resolve_input=_resolve_input, hash_file=cache.sha256,
            include_prompts=bool(self.policy["audit"]["include_prompts"]))
        if people:
            # Several people: every reference's sha256 and consent, in order.
            self.generation.update(reference=None, consent=None, identities=[
                provenance.identity_record(p.identity) | {"strength": p.strength,
                                                          "region": p.region.describe() if p.region else "whole frame"}
                for p in people])
        else:
            self.generation.update(provenance.identity_record(identity))
        self.generation["tool"] = {"name": provenance.TOOL_NAME, "version": provenance.TOOL_VERSION}
        self.generation["prompt_id"] = _prompt_id()
        if identity is None:
            self.generation["note_identity"] = "no identity connected to the save node: reference and consent unknown"
            log.warning("Stand-In labelled save: no identity connected, so the manifest cannot name the "
                        "reference or the consent record; connect the identity you applied.")

    def plain_metadata(self) -> dict:
        """For players without C2PA: a readable label and the generation record."""
        return {"comment": PLAIN_LABEL, "ai_generated": "trainedAlgorithmicMedia",
                "standin_provenance": {k: self.generation.get(k) for k in ("tool", "seed", "reference", "consent")}
                | {k: self.generation[k] for k in ("identities",) if k in self.generation}
                | {"models": [{"name": m["name"], "sha256": m["sha256"]} for m in self.generation["models"]]}}

    def sign_and_log(self, files: list[tuple[str, str]], visible_mark: bool) -> tuple[list[dict], list[str]]:
        """``files``: (staged path, final path in output/) pairs. Signs each staged file (titled
        with its final name) and appends the audit line naming the final paths; publishes nothing."""
        results, notes = [], []
        generation = dict(self.generation, visible_mark=bool(visible_mark))
        for staged, final in files:
            signed = provenance.sign_file(staged, generation, self.key, title=os.path.basename(final))
            results.append({"path": final, "sha256": provenance.sha256_file(staged),
                            "manifest_label": signed.manifest_label, "bytes_added": signed.bytes_added})
        what = self.key.describe()
        notes.append(f"C2PA manifest signed ({what}): AI-generated (trainedAlgorithmicMedia).")
        if self.key.self_signed:
            notes.append("SELF-SIGNED: readers report the signer as untrusted; configure your own certificate "
                         "in user/__standin/policy.json (signing.certificate / signing.private_key).")
        for c in [self.generation.get("consent")] + [i["consent"] for i in self.generation.get("identities", [])]:
            if c:
                notes.append(f"Consent: {c['subject']} for '{c['purpose']}' until {c['valid_until']}.")
        audit_cfg = self.policy["audit"]
        if audit_cfg["enabled"]:
            out_dir = folder_paths.get_output_directory()
            entry = {
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                "prompt_id": self.generation.get("prompt_id"), "node_id": self.hidden.unique_id,
                "outputs": [{"file": os.path.relpath(r["path"], out_dir), "sha256": r["sha256"],
                             "manifest_label": r["manifest_label"]} for r in results],
                "signer": {"self_signed": self.key.self_signed, "source": self.key.source},
                "visible_mark": bool(visible_mark),
                **{k: self.generation.get(k) for k in ("reference", "consent", "models", "input_files",
                                                      "seeds", "seed", "settings", "tool")},
            }
            if "identities" in self.generation:
                entry["identities"] = self.generation["identities"]
            if audit_cfg.get("include_reference_image") and self.identity is not None:
                if isinstance(self.identity, Identities):
                    entry["identities"] = [dict(i, reference=provenance.identity_record(p.identity, include_image=True)["reference"])
                                           for i, p in zip(self.generation["identities"], self.identity.people)]
                else:
                    entry["reference"] = provenance.identity_record(self.identity, include_image=True)["reference"]
            log_ = preflight.audit_log(self.state, self.policy)
            log_.append(entry)
            notes.append(f"Audit line written to {log_.path}.")
        return results, notes


    def publish_all(self, pub, pairs: list[tuple[str, str]], results: list[dict]) -> None:
        """Places the signed, logged files in output/. If that fails, the audit log already names
        them: a ``publish_failed`` event says where they went instead."""
        try:
            for staged, final in pairs:
                pub.publish(staged, final)
        except OSError as e:
            if self.policy["audit"]["enabled"]:
                out_dir = folder_paths.get_output_directory()
                missing = [r for r in results if r["path"] not in pub.published]
                try:
                    preflight.audit_log(self.state, self.policy).append({
                        "event": "publish_failed", "prompt_id": self.generation.get("prompt_id"),
                        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                        "files": [{"file": os.path.relpath(r["path"], out_dir), "sha256": r["sha256"]} for r in missing],
                        "quarantine": pub.quarantine_dir, "error": f"{type(e).__name__}: {e}"})
                except OSError:
                    log.exception("Stand-In: could not log the failed publication")
            raise


def failure_message(error: Exception, what: str) -> str:
    """An error of the labelled save as a sentence saying what to do."""
    if isinstance(error, OSError):
        target = getattr(error, "filename2", None) or error.filename  # link/rename: the destination
        path = os.path.abspath(str(target or ""))
        places = [(os.path.join(state_dir(), "audit"), "Writing the Stand-In audit log"),
                  (os.path.join(state_dir(), "staging"), "Writing the file in the staging folder"),
                  (os.path.abspath(folder_paths.get_output_directory()), "Placing the file in output/")]
        for folder, doing in places:
            if target and (path == folder or path.startswith(folder + os.sep)):
                what = doing
                break
        return preflight.describe_os_error(error, what)
    if isinstance(error, (provenance.ProvenanceError, preflight.PreflightError, policy_schema.PolicyError,
                          consent.ConsentError, ValueError)):
        return str(error).rstrip(".")
    return f"{type(error).__name__}: {error}"


def guarded(what: str, frames, work):
    """Runs ``work(publication)``; on any failure keeps the frames in quarantine and raises a
    ValueError naming the fault, the fix and the quarantine folder. Nothing reaches output/ but
    a signed, logged file."""
    pub = publish.Publication(state_dir(), _prompt_id())
    try:
        return work(pub)
    except Exception as e:
        reason = failure_message(e, what)
        try:
            folder, kept = pub.quarantine(reason, frames)
            where = (f"The {kept} generated frame(s) are kept as PNGs in {os.path.join(folder, 'frames')} "
                     f"(nothing lost); fix the above and save them again (e.g. Load Image from there), or re-run.")
        except OSError as q:
            where = f"The frames could NOT be kept ({q}); fix the above and re-run."
        raise ValueError(f"Nothing was saved to output/: {reason}. {where}") from None
    finally:
        pub.cleanup()


def _mark(images: torch.Tensor) -> torch.Tensor:
    marked = provenance.visible_mark(images.detach().cpu().float().numpy())
    return torch.from_numpy(marked).to(images.dtype)


IDENTITY_TOOLTIP = ("The identity you applied (from Encode Reference Face or Consent Record, or Add Identity "
                    "for several people): every reference's sha256 and consent record go into the manifest. "
                    "Optional, but without it the manifest cannot name them.")
MARK_TOOLTIP = "Also draw a visible 'AI-generated' label in the lower right corner of every frame."


class SaveLabelledVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "SaveLabelledVideo",
            display_name="Save Labelled Video (C2PA)",
            category=CATEGORY,
            description=("Saves the video exactly as Save Video does, then embeds a signed C2PA manifest "
                         "marking it AI-generated (trainedAlgorithmicMedia) and naming the models and "
                         "adapter with their sha256, the reference's sha256, the consent record, seed and "
                         "settings; writes plain MP4 tags for players without C2PA, and a line in the "
                         "audit log (user/__standin/audit). Check a file with tools/verify_provenance.py."),
            inputs=[
                io.Video.Input("video", tooltip="The video to save (e.g. from Create Video)."),
                io.String.Input("filename_prefix", default="standin/labelled",
                                tooltip="The prefix for the file to save, as in Save Video."),
                io.Combo.Input("format", options=VIDEO_FORMATS, default="auto",
                               tooltip="The container (C2PA manifests are embedded in MP4)."),
                io.Combo.Input("codec", options=Types.VideoCodec.as_input(), default="auto",
                               tooltip="The codec to use for the video."),
                io.Boolean.Input("visible_mark", default=False, tooltip=MARK_TOOLTIP),
                IdentitySocket.Input("identity", optional=True, tooltip=IDENTITY_TOOLTIP),
            ],
            outputs=[io.String.Output("provenance", display_name="provenance",
                                      tooltip="What was signed, by which key (self-signed or yours), and where "
                                              "the audit line went.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo, io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix):
        return refuse_if_server_unready()

    @classmethod
    def execute(cls, video, filename_prefix, format, codec, visible_mark=False, identity=None) -> io.NodeOutput:
        def work(pub):
            nonlocal video
            labeller = Labeller(cls, identity)
            if visible_mark:
                parts = video.get_components()
                video = InputImpl.VideoFromComponents(Types.VideoComponents(
                    images=_mark(parts.images), audio=parts.audio, frame_rate=parts.frame_rate))
            width, height = video.get_dimensions()
            full_output_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
                filename_prefix, folder_paths.get_output_directory(), width, height)
            metadata = labeller.plain_metadata()
            if not args.disable_metadata:
                if cls.hidden.extra_pnginfo is not None:
                    metadata.update(cls.hidden.extra_pnginfo)
                if cls.hidden.prompt is not None:
                    metadata["prompt"] = cls.hidden.prompt
            file = f"{filename}_{counter:05}_.{Types.VideoContainer.get_extension(format)}"
            final = os.path.join(full_output_folder, file)
            staged = pub.stage(file)
            video.save_to(staged, format=format, codec=codec, metadata=metadata)
            results, notes = labeller.sign_and_log([(staged, final)], visible_mark)
            labeller.publish_all(pub, [(staged, final)], results)
            return file, subfolder, notes

        file, subfolder, notes = guarded("Saving the labelled video", lambda: _frames_of(video), work)
        for note in notes:
            log.info("Save Labelled Video: %s", note)
        preview = ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]).as_dict()
        preview["text"] = notes
        return io.NodeOutput("\n".join(notes), ui=preview)


def _frames_of(video):
    return video.get_components().images.detach().cpu().float().numpy()


class SaveLabelledImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "SaveLabelledImage",
            display_name="Save Labelled Image (C2PA)",
            category=CATEGORY,
            description=("Saves PNGs exactly as Save Image does, then embeds a signed C2PA manifest in each "
                         "marking it AI-generated and naming what made it; writes a line in the audit log."),
            inputs=[
                io.Image.Input("images", tooltip="The images to save."),
                io.String.Input("filename_prefix", default="standin/labelled",
                                tooltip="The prefix for the files to save, as in Save Image."),
                io.Boolean.Input("visible_mark", default=False, tooltip=MARK_TOOLTIP),
                IdentitySocket.Input("identity", optional=True, tooltip=IDENTITY_TOOLTIP),
            ],
            outputs=[io.String.Output("provenance", display_name="provenance",
                                      tooltip="What was signed, by which key, and where the audit line went.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo, io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix):
        return refuse_if_server_unready()

    @classmethod
    def execute(cls, images, filename_prefix, visible_mark=False, identity=None) -> io.NodeOutput:
        import nodes as comfy_nodes  # ComfyUI's nodes.py: its SaveImage writes the PNGs

        def work(pub):
            labeller = Labeller(cls, identity)
            marked = _mark(images) if visible_mark else images
            extra = dict(cls.hidden.extra_pnginfo or {})
            extra.update(labeller.plain_metadata())
            out_dir = folder_paths.get_output_directory()
            full_output_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
                filename_prefix, out_dir, images[0].shape[1], images[0].shape[0])
            # ComfyUI's SaveImage writes into the staging folder; the files get their output/ names
            # (the counter ComfyUI would have used there) when they are published.
            saver = comfy_nodes.SaveImage()
            saver.output_dir = pub.stage()
            saved = saver.save_images(marked, os.path.basename(filename_prefix) or "labelled",
                                      prompt=cls.hidden.prompt, extra_pnginfo=extra)
            pairs, items = [], []
            for i, it in enumerate(saved["ui"]["images"]):
                name = f"{filename}_{counter + i:05}_.png"
                pairs.append((os.path.join(saver.output_dir, it["subfolder"], it["filename"]),
                              os.path.join(full_output_folder, name)))
                items.append({"filename": name, "subfolder": subfolder, "type": "output"})
            results, notes = labeller.sign_and_log(pairs, visible_mark)
            labeller.publish_all(pub, pairs, results)
            return items, notes

        items, notes = guarded("Saving the labelled images", lambda: images.detach().cpu().float().numpy(), work)
        for note in notes:
            log.info("Save Labelled Image: %s", note)
        return io.NodeOutput("\n".join(notes), ui={"images": items, "text": notes})
