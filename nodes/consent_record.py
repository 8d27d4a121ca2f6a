"""Consent Record: attach who consented, for what and until when to an identity; and the
server-wide policy check that Apply Stand-In Identity runs before sampling."""

from __future__ import annotations

import dataclasses
import datetime
import os

import folder_paths
from comfy_api.latest import io

from ..engine.provenance import consent
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
    """Changes when the policy file or the date does, so a cached Apply re-checks consent."""
    path = os.path.join(state_dir(), consent.POLICY_FILE)
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None
    return stamp, datetime.date.today().isoformat()


def enforce(identity) -> None:
    """Refuses (ValueError, shown on the node) an identity whose consent is expired, or that has
    none while the policy requires one."""
    try:
        consent.check_generation(getattr(identity, "consent", None), load_policy())
    except (consent.ConsentError, consent.PolicyError) as e:
        raise ValueError(str(e)) from None


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
        try:
            consent.make_record(subject, purpose, valid_until, document_id, document_sha256, granted_on or "")
        except consent.ConsentError as e:
            return str(e)
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
