"""Consent Record: attach who consented, for what and until when to an identity; and the
server-wide policy check that Apply Stand-In Identity runs before sampling."""

from __future__ import annotations

import dataclasses
import datetime
import os

import folder_paths
from comfy_api.latest import io

from ..engine.provenance import consent, preflight
from .sockets import CATEGORY, NODE_PREFIX, Identities, IdentitySocket


def state_dir() -> str:
    """user/__standin: policy, audit log, signing key. System-user folders (``__`` prefix) are
    not served by ComfyUI's user-data HTTP API."""
    getter = getattr(folder_paths, "get_system_user_directory", None)
    if getter is not None:
        return getter("standin")
    return os.path.join(folder_paths.get_user_directory(), "__standin")


def load_policy() -> dict:
    return consent.load_policy(state_dir())


def policy_fingerprint() -> tuple:
    """Changes when the policy file, the signing files it names or the date do, so a cached Apply
    re-checks them."""
    def stamp(path):
        try:
            st = os.stat(path)
            return st.st_size, st.st_mtime_ns
        except (OSError, TypeError, ValueError):
            return None
    path = os.path.join(state_dir(), consent.POLICY_FILE)
    try:
        signing = load_policy()["signing"]
        files = (stamp(signing["certificate"]), stamp(signing["private_key"]))
    except (ValueError, KeyError):
        files = None
    return stamp(path), files, datetime.date.today().isoformat()


def server_ready() -> preflight.Ready:
    """The policy, signing key and audit log, checked (ValueError saying what to fix)."""
    return preflight.server_checks(state_dir())


def refuse_if_server_unready(labelled: bool = True) -> bool:
    """For validate_inputs: True, or a ValueError with the server-wide fault (the policy; with
    ``labelled`` also the signing credentials and the audit log). Raised rather than returned:
    ComfyUI repeats a returned message once per input of the node, a raised one is reported once."""
    if labelled:
        server_ready()
    else:
        preflight.policy_check(state_dir())
    return True


LABELLED_SAVES = ("StandIn_SaveLabelledVideo", "StandIn_SaveLabelledImage")


def prompt_has_labelled_save(prompt) -> bool:
    """Whether the running prompt saves through a labelled save node; unknown (no prompt) counts
    as yes, so the checks fail closed."""
    if not isinstance(prompt, dict) or not prompt:
        return True
    return any(isinstance(n, dict) and n.get("class_type") in LABELLED_SAVES for n in prompt.values())


def enforce(identity, ready: preflight.Ready | None = None, labelled: bool = True) -> dict:
    """Before sampling: the policy (with ``labelled``, also the signing credentials and the audit
    log the save will use), then this identity's consent (expired, over the limits, or none while
    the policy requires one). ValueError, shown on the node. Returns the policy."""
    if ready is None and labelled:
        ready = server_ready()
    policy = ready.policy if ready is not None else preflight.policy_check(state_dir())
    preflight.check_identity_consent(getattr(identity, "consent", None), policy)
    return policy


class ConsentRecord(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_PREFIX + "ConsentRecord",
            display_name="Consent Record",
            category=CATEGORY,
            description=("Attaches the person's consent to an identity: who consented, for what purpose, "
                         "until when, and a reference to the signed document (its id in your records or "
                         "its sha256, never the document). Apply Stand-In Identity refuses an expired "
                         "record; the labelled save nodes write it into the file's C2PA manifest and the "
                         "audit log. A server can require it (require_consent in user/__standin/policy.json)."),
            inputs=[
                IdentitySocket.Input("identity", tooltip="From Encode Reference Face."),
                io.String.Input("subject", default="", tooltip="Who consented: the person's name or your id for them."),
                io.String.Input("purpose", default="", multiline=True,
                                tooltip="What the person consented to, e.g. 'product explainer video, web and social, 2027'."),
                io.String.Input("valid_until", default="",
                                tooltip="Last day the consent is valid, YYYY-MM-DD. Expired consent is refused."),
                io.String.Input("document_id", default="",
                                tooltip="Id of the signed consent document in your records (contract number, DMS id)."),
                io.String.Input("document_sha256", default="",
                                tooltip="Or/and the sha256 of the signed document file (sha256sum). The document "
                                        "itself is never stored."),
                io.String.Input("granted_on", default="", optional=True,
                                tooltip="Optional: the day consent was given, YYYY-MM-DD."),
            ],
            outputs=[
                IdentitySocket.Output("identity_with_consent", display_name="identity",
                                      tooltip="The same identity, carrying the consent record."),
            ],
        )

    @classmethod
    def validate_inputs(cls, subject=None, purpose=None, valid_until=None, document_id=None,
                        document_sha256=None, granted_on=""):
        if None in (subject, purpose, valid_until, document_id, document_sha256):
            return True  # a field comes from another node: execute checks it once it is known
        # Raised, not returned: ComfyUI repeats a returned message once per input, and this one
        # is about the record as a whole.
        consent.make_record(subject, purpose, valid_until, document_id, document_sha256, granted_on or "")
        return True

    @classmethod
    def execute(cls, identity, subject, purpose, valid_until, document_id, document_sha256,
                granted_on="") -> io.NodeOutput:
        if isinstance(identity, Identities):
            raise ValueError("A consent record belongs to one person: put a Consent Record between each "
                             "person's Encode Reference Face and their Add Identity node.")
        try:
            record = consent.make_record(subject, purpose, valid_until, document_id, document_sha256, granted_on or "")
        except consent.ConsentError as e:
            raise ValueError(str(e)) from None
        return io.NodeOutput(dataclasses.replace(identity, consent=record))
