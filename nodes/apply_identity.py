"""Apply RSA/CPM: put a Stand-In identity on a Wan model (a clone; the input MODEL is untouched)."""

from __future__ import annotations

from comfy_api.latest import io

from .consent_record import (enforce as enforce_consent_policy, policy_fingerprint, prompt_has_labelled_save,
                             refuse_if_server_unready, server_ready)
from ..engine.identity.patch import LATENT_CHANNELS, IdentitySpec, StandInError, apply_standin
from .sockets import CATEGORY, NODE_PREFIX, AdapterSocket, Identities, IdentitySocket, people_of


class ApplyRSACPM(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "ApplyRSACPM",
            display_name="Apply Stand-In Identity (RSA/CPM)",
            category=CATEGORY,
            description=("Gives a Wan text-to-video model the identity of the reference: the video "
                         "attends to the reference through Restricted Self-Attention, with the "
                         "reference placed beside the video by Conditional Position Mapping. "
                         "Defaults reproduce the official Stand-In exactly. Works with KSampler, "
                         "KSamplerAdvanced, SamplerCustomAdvanced and Sample Video."),
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 / 2.2 text-to-video (or VACE) model. For "
                                                "Wan 2.2 A14B, patch each expert with its own adapter."),
                AdapterSocket.Input("adapter", tooltip="From Load Identity Adapter; must match this model."),
                IdentitySocket.Input("identity", tooltip="From Encode Reference Face (one person), or "
                                                         "from Add Identity (several people in one video)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=4.0, step=0.05,
                               tooltip="How much attention the video pays to the reference. 1.0 is "
                                       "the official behaviour; 0 is the plain model. Technically: "
                                       "log(strength) is added to the attention logits of the "
                                       "reference keys, i.e. each reference token's attention weight "
                                       "is multiplied by strength before normalisation. Values other "
                                       "than 0 and 1 run self-attention through PyTorch SDPA (exact, "
                                       "but slower than sage/flash attention)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the identity starts acting (0 = first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the identity stops acting (1 = last step)."),
            ],
            outputs=[
                io.Model.Output(tooltip="The model carrying the identity."),
            ],
            hidden=[io.Hidden.prompt],  # whether the prompt saves through a labelled save
        )

    @classmethod
    def validate_inputs(cls, strength=1.0):
        # The policy file refuses the prompt at queue time (the labelled save nodes check the
        # signing credentials and the audit log there). ComfyUI calls validate_inputs only when
        # it declares an input.
        return refuse_if_server_unready(labelled=False)

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return policy_fingerprint()

    @classmethod
    def execute(cls, model, adapter, identity, strength=1.0, start_percent=0.0,
                end_percent=1.0) -> io.NodeOutput:
        people = people_of(identity)
        several = isinstance(identity, Identities)
        def who(n):
            return f"Person {n}: " if several else ""

        # Before any sampling: the policy, the signing key and audit log when the prompt saves
        # through a labelled save, and every person's consent (expired, over the limits, or
        # missing where required).
        labelled = prompt_has_labelled_save(cls.hidden.prompt if cls.hidden else None)
        ready = server_ready() if labelled else None  # server-wide: once, not once per person
        for n, person in enumerate(people, 1):
            try:
                enforce_consent_policy(person.identity, ready, labelled=labelled)
            except ValueError as e:
                raise ValueError(f"{who(n)}{e}") from None
        for n, person in enumerate(people, 1):
            check_channels(model, person.identity, who(n))
        references = [model.model.process_latent_in(p.identity.latent) for p in people]
        if several:
            reference = [IdentitySpec(r, p.strength, p.region) for r, p in zip(references, people)]
        else:
            reference = references[0]
        try:
            patched = apply_standin(model, adapter.adapter, reference, strength=strength,
                                    start_percent=start_percent, end_percent=end_percent,
                                    adapter_patcher=adapter.patcher)
        except StandInError as e:
            raise ValueError(f"{adapter.name}: {e}") from None
        return io.NodeOutput(patched)


def check_channels(model, identity, who="") -> None:
    if identity.latent_channels != LATENT_CHANNELS:
        raise ValueError(
            f"{who}This identity was encoded by a VAE with {identity.latent_channels}-channel "
            f"latents ({identity.vae_kind}); Stand-In's Wan models take the Wan 2.1 VAE's "
            f"{LATENT_CHANNELS}-channel latents. Re-encode the reference with the Wan 2.1 VAE.")
    latent_format = model.model.latent_format
    if getattr(latent_format, "latent_channels", LATENT_CHANNELS) != identity.latent_channels:
        raise ValueError(
            f"{who}The model works in {latent_format.latent_channels}-channel latents but the identity "
            f"was encoded into {identity.latent_channels} channels; connect a Wan T2V 14B / A14B "
            f"model and encode the reference with the Wan 2.1 VAE.")
