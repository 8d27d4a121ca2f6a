"""Apply Stand-In Identity (Raylight): the identity on the model Raylight's Ray actors hold.

Raylight (komikndr/raylight) splits one video over several GPUs: each GPU is a Ray actor with its
own copy (or FSDP shard) of the model, and its nodes pass RAY_ACTORS instead of MODEL. Like
Raylight's own patch nodes, this one sends a function to every actor through the actor's
``model_function_runner``, which replaces the actor's model by the function's result: here a
clone carrying the Stand-In patch and the wrapper that joins the reference inside xfuser's
sequence-parallel attention (engine/identity/sequence_parallel.py).

The node loads without Ray or Raylight (ComfyUI loads this pack before Raylight, whose folder
name sorts later, so whether Raylight exists is only known when the node runs) and explains on
use when they are missing.
"""

from __future__ import annotations

import os

from comfy_api.latest import io

from .consent_record import enforce as enforce_consent_policy, policy_fingerprint
from ..engine.identity import actor_entry
from ..engine.identity.patch import LATENT_CHANNELS
from ..engine.identity.sequence_parallel import STRENGTH_REFUSED
from .sockets import CATEGORY, NODE_PREFIX, AdapterSocket, IdentitySocket

RayActorsSocket = io.Custom("RAY_ACTORS")

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NO_RAY = ("Apply Stand-In Identity (Raylight) needs Raylight (github.com/komikndr/raylight) and "
          "its Ray cluster: install Raylight, start the actors with its Ray Init Actor and Ray UNET "
          "Loader nodes, and connect their RAY_ACTORS output here. Without several GPUs, use "
          "Apply Stand-In Identity (RSA/CPM).")


def actor_workers(ray_actors) -> list:
    workers = ray_actors.get("workers") if isinstance(ray_actors, dict) else None
    if not workers:
        raise ValueError("This RAY_ACTORS input holds no Ray workers; connect the output of "
                         "Raylight's Ray UNET Loader (or a Raylight patch node after it).")
    return list(workers)


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError(NO_RAY) from None
    if not ray.is_initialized():
        raise ValueError(NO_RAY)
    return ray


def _actor_error(e: Exception) -> ValueError:
    """A Ray task error shows the actor's traceback; the canvas gets the actor's message."""
    cause = getattr(e, "cause", None) or e
    return ValueError(f"On the Ray actors: {cause}")


def adapter_payload(adapter) -> dict:
    """The adapter as the actors load it: its file path when the file is there, else its weights
    (sent once, through Ray's object store)."""
    import folder_paths
    from .load_adapter import FOLDER
    path = folder_paths.get_full_path(FOLDER, adapter.name)
    if path is not None and os.path.isfile(path):
        return {"adapter_path": path, "adapter_name": adapter.name}
    return {"adapter_state": {k: v.detach().cpu() for k, v in adapter.adapter.state_dict().items()},
            "adapter_name": adapter.name}


def run_on_actors(ray, workers, entry: str, kwargs: dict, values_from_first=False):
    # By value: the actors cannot import this pack under ComfyUI's module name for it.
    ray.cloudpickle.register_pickle_by_value(actor_entry)
    try:
        if values_from_first:
            return ray.get(workers[0].model_function_runner_get_values.remote(
                actor_entry.run, PACK_DIR, entry, kwargs))
        ray.get([w.model_function_runner.remote(actor_entry.run, PACK_DIR, entry, kwargs)
                 for w in workers])
    except Exception as e:  # RayTaskError, RayActorError: their message is the useful part
        raise _actor_error(e) from None


class ApplyIdentityRaylight(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "ApplyIdentityRaylight",
            display_name="Apply Stand-In Identity (Raylight)",
            category=CATEGORY,
            description=("Gives the Wan text-to-video model that Raylight's Ray actors hold the "
                         "identity of the reference, for one video split over several GPUs (Ulysses "
                         "and ring sequence parallelism). Every GPU builds the reference keys/values "
                         "itself and joins them to xfuser's attention, so the video equals the "
                         "single-GPU Stand-In result. Put it after Ray UNET Loader, before the "
                         "Raylight sampler."),
            inputs=[
                RayActorsSocket.Input("ray_actors", tooltip="From Raylight's Ray UNET Loader (a Wan "
                                                            "2.1 / 2.2 text-to-video model)."),
                AdapterSocket.Input("adapter", tooltip="From Load Identity Adapter; must match the "
                                                       "actors' model. The actors read the same file."),
                IdentitySocket.Input("identity", tooltip="From Encode Reference Face."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=1.0,
                               tooltip="1.0: the official identity; 0: the plain model. Other values "
                                       "are refused here: xfuser's attention takes no mask, so "
                                       "they would not be exact."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the identity starts acting (0 = first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the identity stops acting (1 = last step)."),
            ],
            outputs=[
                RayActorsSocket.Output(tooltip="The same actors, their model now carrying the "
                                               "identity; connect it to the Raylight sampler."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return policy_fingerprint()

    @classmethod
    def validate_inputs(cls, strength=1.0, start_percent=0.0, end_percent=1.0):
        # A linked input arrives as None at validation: execute checks it again.
        if strength is not None and strength not in (0.0, 1.0):
            return STRENGTH_REFUSED.format(strength=strength)
        if None not in (start_percent, end_percent) and not (0.0 <= start_percent <= end_percent <= 1.0):
            return (f"start_percent ({start_percent}) and end_percent ({end_percent}) must "
                    f"satisfy 0 <= start <= end <= 1.")
        return True

    @classmethod
    def execute(cls, ray_actors, adapter, identity, strength=1.0, start_percent=0.0,
                end_percent=1.0) -> io.NodeOutput:
        enforce_consent_policy(identity)  # before anything reaches the actors
        message = cls.validate_inputs(strength, start_percent, end_percent)
        if message is not True:
            raise ValueError(message)
        if getattr(identity, "latent", None) is None:
            raise ValueError("Apply Stand-In Identity (Raylight) takes one person: connect Encode "
                             "Reference Face (or Consent Record) directly, not Add Identity.")
        if identity.latent_channels != LATENT_CHANNELS:
            raise ValueError(
                f"This identity was encoded by a VAE with {identity.latent_channels}-channel "
                f"latents ({identity.vae_kind}); Stand-In's Wan models take the Wan 2.1 VAE's "
                f"{LATENT_CHANNELS}-channel latents. Re-encode the reference with the Wan 2.1 VAE.")
        workers = actor_workers(ray_actors)
        ray = _ray()
        problem = run_on_actors(ray, workers, "check_on_actor",
                                {"num_blocks": adapter.spec.num_blocks, "dim": adapter.spec.dim},
                                values_from_first=True)
        if problem:
            raise ValueError(f"{adapter.name}: {problem}")
        kwargs = dict(adapter_payload(adapter), latent=identity.latent.detach().cpu(),
                      strength=float(strength), start_percent=float(start_percent),
                      end_percent=float(end_percent))
        run_on_actors(ray, workers, "apply_on_actor", kwargs)
        return io.NodeOutput(ray_actors)
