"""Consent records and the server-wide policy that can require them (importable without ComfyUI).

A consent record says who consented, for what, until when, and where the signed document is
kept: an id in the user's own records and/or the document's sha256. The document itself never
enters the pack, the manifests or the audit log.

The policy is a JSON file in ComfyUI's user directory (``user/__standin/policy.json``; the
``__`` prefix keeps it out of ComfyUI's HTTP user-data API). Without the file nothing is
required: artists are not blocked.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import asdict, dataclass, field

POLICY_FILE = "policy.json"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

DEFAULT_POLICY = {
    # Refuse identity generations whose identity carries no valid, unexpired consent record.
    "require_consent": False,
    "audit": {
        "enabled": True,
        # Text prompts are stored as their sha256 unless this is on.
        "include_prompts": False,
        # The 512x512 reference the model saw, as a PNG in base64; off: only its sha256.
        "include_reference_image": False,
        "max_bytes": 10 * 2**20,
        "backups": 5,
    },
    "signing": {
        # PEM certificate chain (signer first) and its private key; unset: a key generated once
        # for this installation, marked self-signed.
        "certificate": None,
        "private_key": None,
        "algorithm": "es256",
        "timestamp_url": None,
    },
}


class ConsentError(ValueError):
    """A consent record is malformed, expired, or missing where the policy requires one."""


class PolicyError(ValueError):
    """The policy file cannot be read; generation is refused rather than run unchecked."""


def parse_date(text: str, what: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(str(text).strip())
    except ValueError:
        raise ConsentError(f"{what} '{text}' is not a date: write it as YYYY-MM-DD (e.g. 2027-12-31).") from None


@dataclass(frozen=True)
class ConsentRecord:
    subject: str
    purpose: str
    valid_until: str  # ISO date, inclusive
    document_id: str = ""
    document_sha256: str = ""
    granted_on: str = ""
    recorded_by: str = ""
    notes: tuple = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return {k: v for k, v in d.items() if v not in ("", [], None)}

    def expired(self, today: datetime.date | None = None) -> bool:
        today = today or datetime.date.today()
        return parse_date(self.valid_until, "valid_until") < today


def make_record(subject: str, purpose: str, valid_until: str, document_id: str = "",
                document_sha256: str = "", granted_on: str = "", recorded_by: str = "",
                today: datetime.date | None = None) -> ConsentRecord:
    """A validated record; raises ConsentError naming every problem at once."""
    problems = []
    subject, purpose = (subject or "").strip(), (purpose or "").strip()
    document_id, document_sha256 = (document_id or "").strip(), (document_sha256 or "").strip().lower()
    if not subject:
        problems.append("who consented (subject) is empty: give the person's name or your id for them")
    if not purpose:
        problems.append("the purpose is empty: say what the person consented to (e.g. 'product video, web')")
    if not document_id and not document_sha256:
        problems.append("no reference to the signed consent document: give its id in your records "
                        "(document_id) or its sha256 (document_sha256), not the document itself")
    if document_sha256 and not SHA256_RE.match(document_sha256):
        problems.append("document_sha256 must be 64 hexadecimal characters (sha256sum of the document)")
    until = None
    try:
        until = parse_date(valid_until, "valid_until")
    except ConsentError as e:
        problems.append(str(e))
    if granted_on:
        try:
            granted = parse_date(granted_on, "granted_on")
            if until is not None and granted > until:
                problems.append(f"granted_on {granted} is after valid_until {until}")
        except ConsentError as e:
            problems.append(str(e))
    if problems:
        raise ConsentError("Consent record: " + "; ".join(problems) + ".")
    record = ConsentRecord(subject=subject, purpose=purpose, valid_until=until.isoformat(),
                           document_id=document_id, document_sha256=document_sha256,
                           granted_on=granted_on.strip() if granted_on else "", recorded_by=(recorded_by or "").strip())
    check_not_expired(record, today)
    return record


def check_not_expired(record: ConsentRecord, today: datetime.date | None = None) -> None:
    today = today or datetime.date.today()
    if record.expired(today):
        raise ConsentError(
            f"The consent of '{record.subject}' for '{record.purpose}' expired on {record.valid_until} "
            f"(today is {today.isoformat()}): get a renewed consent and update the Consent Record.")


# ------------------------------------------------------------------------------------------
# Policy
# ------------------------------------------------------------------------------------------

def _merge(default: dict, given: dict) -> dict:
    out = dict(default)
    for key, value in given.items():
        if isinstance(default.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(default[key], value)
        else:
            out[key] = value
    return out


def load_policy(policy_dir: str) -> dict:
    """The policy in ``policy_dir/policy.json`` over the defaults; read at every use, so an
    edit takes effect without restarting ComfyUI."""
    path = os.path.join(policy_dir, POLICY_FILE)
    if not os.path.isfile(path):
        return _merge(DEFAULT_POLICY, {})
    try:
        with open(path, encoding="utf-8") as f:
            given = json.load(f)
    except (OSError, ValueError) as e:
        raise PolicyError(f"The Stand-In policy file {path} cannot be read ({e}); fix or remove it. "
                          f"Identity generations are refused until then.") from None
    if not isinstance(given, dict):
        raise PolicyError(f"The Stand-In policy file {path} must hold a JSON object.")
    unknown = set(given) - set(DEFAULT_POLICY)
    if unknown:
        raise PolicyError(f"The Stand-In policy file {path} has unknown settings {sorted(unknown)}; "
                          f"known: {sorted(DEFAULT_POLICY)}.")
    return _merge(DEFAULT_POLICY, given)


def check_generation(consent: ConsentRecord | None, policy: dict, today: datetime.date | None = None) -> None:
    """Before sampling: an attached record must be unexpired; with require_consent, one must exist."""
    if consent is not None:
        check_not_expired(consent, today)
        return
    if policy.get("require_consent"):
        raise ConsentError(
            "This server requires a consent record for every identity video (require_consent in the "
            "Stand-In policy file), and this identity has none. Add a Consent Record node between "
            "Encode Reference Face and Apply Stand-In Identity, with who consented, the purpose, the "
            "date the consent is valid until, and the id or sha256 of the signed document.")
