"""The objects that travel between the pack's nodes, and their socket types.

Own socket types mean the editor refuses a wrong wire (an identity into an adapter input)
before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from comfy_api.latest import io

from ..engine.identity.adapter import StandInAdapter

CATEGORY = "Stand-In"
NODE_PREFIX = "StandIn_"

AdapterSocket = io.Custom("STANDIN_ADAPTER")
IdentitySocket = io.Custom("STANDIN_IDENTITY")


@dataclass(frozen=True, eq=False)
class IdentityAdapter:
    """A validated adapter file and the ModelPatcher through which ComfyUI places its weights."""
    name: str
    adapter: StandInAdapter
    patcher: object

    @property
    def spec(self):
        return self.adapter.spec


@dataclass(frozen=True, eq=False)
class Identity:
    """A prepared, VAE-encoded reference image.

    ``latent`` is the raw VAE latent ([1, 16, 1, h, w], before the model's process_latent_in),
    ``image`` exactly the pixels that were encoded ([1, H, W, 3] in [0, 1]).
    ``alpha``: the person in ``image`` ([H, W] in [0, 1], 1 = person), the official RGBA
    reference's alpha that face swap pastes through; None when the background was kept.
    """
    latent: torch.Tensor
    image: torch.Tensor
    vae_kind: str
    latent_channels: int
    face_box: tuple | None = None
    crop: tuple | None = None
    detector: str = ""
    warnings: tuple = field(default_factory=tuple)
    alpha: torch.Tensor | None = None
    # A consent.ConsentRecord attached by the Consent Record node, or None.
    consent: object | None = None


@dataclass(frozen=True, eq=False)
class Person:
    """One identity in a scene of several: the person, how strongly the video attends to them,
    and where they may appear (an engine ``Region``, or None for the whole frame)."""
    identity: Identity
    strength: float = 1.0
    region: object | None = None


@dataclass(frozen=True, eq=False)
class Identities:
    """Several people for one model, in order (Add Identity builds it). It travels on the
    STANDIN_IDENTITY socket, so Apply Stand-In Identity and the labelled save nodes take one
    person or several on the same input."""
    people: tuple


def people_of(identity) -> list:
    """The people an identity socket carries: one ``Identity`` is one person at strength 1."""
    if isinstance(identity, Identities):
        return list(identity.people)
    return [Person(identity)]
