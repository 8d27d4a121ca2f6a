"""Add Identity: several people in one video. Each node adds one person (with where they may
appear and how strongly) to the people collected so far; Apply Stand-In Identity takes the
result on its usual identity input."""

from __future__ import annotations

from comfy_api.latest import io

from ..engine.identity.regions import LAYOUTS, Region, RegionError
from .sockets import CATEGORY, NODE_PREFIX, Identities, IdentitySocket, Person


class AddIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "AddIdentity",
            display_name="Add Identity (several people)",
            category=CATEGORY,
            description=("Puts one more person into the video: chain one Add Identity per person and "
                         "connect the last one to Apply Stand-In Identity. Each person may get a place "
                         "(a layout such as the left half, and/or a mask): video outside it does not "
                         "attend to this person's reference, so two faces do not blend. Zero-shot: the "
                         "Stand-In adapter was trained on one person per video (the official dev/multi "
                         "baseline does the same)."),
            inputs=[
                IdentitySocket.Input("identity", tooltip="This person: from Encode Reference Face or "
                                                         "Consent Record (one person)."),
                io.Combo.Input("layout", options=list(LAYOUTS), default="whole frame",
                               tooltip="Where this person may appear. 'whole frame': anywhere (the "
                                       "official baseline). 'left half' / 'right half' etc.: video "
                                       "outside that part of the frame does not attend to this person."),
                io.Float.Input("strength", default=1.0, min=0.0, max=4.0, step=0.05,
                               tooltip="How much attention the video pays to this person's reference "
                                       "(1.0 = official; 0 = left out). Multiplied by Apply's strength."),
                IdentitySocket.Input("identities", optional=True,
                                     tooltip="The people added so far (the previous Add Identity). "
                                             "Leave empty for the first person."),
                io.Mask.Input("region_mask", optional=True,
                              tooltip="Optional: where this person may appear, 1 = here. One mask for "
                                      "every frame, or one per video frame (the frames of a latent frame "
                                      "are united; frames past the mask's end keep its last one). With "
                                      "a layout too, the person may appear where both allow."),
            ],
            outputs=[
                IdentitySocket.Output("identities_out", display_name="identities",
                                      tooltip="Everyone so far, in order; connect to Apply Stand-In "
                                              "Identity's identity input or to the next Add Identity."),
            ],
        )

    @classmethod
    def execute(cls, identity, layout="whole frame", strength=1.0, identities=None,
                region_mask=None) -> io.NodeOutput:
        if isinstance(identity, Identities):
            raise ValueError("The 'identity' input takes one person (Encode Reference Face or Consent "
                             "Record); connect the people added so far to the 'identities' input instead.")
        if identities is not None and not isinstance(identities, Identities):
            raise ValueError("The 'identities' input takes the output of another Add Identity; connect "
                             "a single person to the 'identity' input of their own Add Identity node.")
        try:
            region = Region(layout, region_mask)
        except RegionError as e:
            raise ValueError(str(e)) from None
        people = (identities.people if identities is not None else ()) + (
            Person(identity, float(strength), None if region.everywhere else region),)
        return io.NodeOutput(Identities(people))
