"""Consent records and the server-wide policy that can require them (importable without ComfyUI).

A consent record says who consented, for what, until when, and where the signed document is
kept: an id in the user's own records and/or the document's sha256. The document itself never
enters the pack, the manifests or the audit log.

The policy is a JSON file in ComfyUI's user directory (``user/__standin/policy.json``; the
``__`` prefix keeps it out of ComfyUI's HTTP user-data API). Without the file nothing is
required: artists are not blocked.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import unicodedata
from dataclasses import asdict, dataclass, field

from . import policy as policy_schema

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A consent record goes into every manifest and audit line: short, plain text. c2pa refuses a
# manifest whose JSON is too long (StringTooLong), so the fields are bounded well below it.
FIELD_LIMITS = {"subject": 256, "purpose": 2000, "document_id": 256, "document_sha256": 64,
                "recorded_by": 256, "valid_until": 32, "granted_on": 32}
# Embeddings, overrides and isolates: they make text display in another order than it is
# stored ("Trojan Source"), so a name could read differently in a viewer than in the log.
BIDI_CONTROLS = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))
MULTILINE_FIELDS = ("purpose",)

DEFAULT_POLICY = policy_schema.DEFAULT_POLICY
PolicyError = policy_schema.PolicyError
POLICY_FILE = policy_schema.POLICY_FILE


class ConsentError(ValueError):
    """A consent record is malformed, expired, or missing where the policy requires one."""


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


def text_problems(fields: dict) -> list[str]:
    """What is wrong with the text of consent fields ({name: text}): too long, not valid Unicode
    (a lone surrogate from JSON's \\ud800), control or bidirectional-override characters. The
    text itself is never repeated in a message: it may be what is wrong."""
    problems = []
    for name, text in fields.items():
        if text is None or text == "":
            continue
        if not isinstance(text, str):
            problems.append(f"{name} must be text, not {type(text).__name__}")
            continue
        limit = FIELD_LIMITS.get(name, 256)
        if len(text) > limit:
            problems.append(f"{name} is {len(text)} characters long; keep it to {limit} characters or fewer "
                            f"(the record names the document, it does not hold it)")
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            problems.append(f"{name} holds an invalid character (a lone UTF-16 surrogate at position {e.start + 1}); "
                            f"retype it")
            continue
        for i, ch in enumerate(text):
            code = ord(ch)
            if code in BIDI_CONTROLS:
                problems.append(f"{name} holds a bidirectional control character (U+{code:04X} "
                                f"{unicodedata.name(ch, '')}) at position {i + 1}, which makes text display in "
                                f"another order than it is stored; retype it without it")
                break
            if unicodedata.category(ch) == "Cc" and not (name in MULTILINE_FIELDS and ch in "\n\t"):
                problems.append(f"{name} holds a control character (U+{code:04X}) at position {i + 1}; "
                                f"remove it")
                break
    return problems


def make_record(subject: str, purpose: str, valid_until: str, document_id: str = "",
                document_sha256: str = "", granted_on: str = "", recorded_by: str = "",
                today: datetime.date | None = None) -> ConsentRecord:
    """A validated record; raises ConsentError naming every problem at once."""
    raw = {"subject": subject, "purpose": purpose, "valid_until": valid_until, "document_id": document_id,
           "document_sha256": document_sha256, "granted_on": granted_on, "recorded_by": recorded_by}
    problems = text_problems(raw)
    if problems:
        raise ConsentError(_joined(problems))
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
        raise ConsentError(_joined(problems))
    record = ConsentRecord(subject=subject, purpose=purpose, valid_until=until.isoformat(),
                           document_id=document_id, document_sha256=document_sha256,
                           granted_on=granted_on.strip() if granted_on else "", recorded_by=(recorded_by or "").strip())
    check_not_expired(record, today)
    return record


def _joined(problems: list[str]) -> str:
    return "Consent record: " + "; ".join(p.rstrip(". ") for p in problems) + "."


def check_record(record: ConsentRecord, today: datetime.date | None = None) -> None:
    """One identity's consent, as Apply and the labelled save see it: the same limits as the
    Consent Record node (a record may come from elsewhere than that node), and not expired."""
    problems = text_problems({k: v for k, v in dataclasses.asdict(record).items() if k != "notes"})
    if problems:
        raise ConsentError(_joined(problems))
    check_not_expired(record, today)


def check_not_expired(record: ConsentRecord, today: datetime.date | None = None) -> None:
    today = today or datetime.date.today()
    if record.expired(today):
        raise ConsentError(
            f"The consent of '{record.subject}' for '{record.purpose}' expired on {record.valid_until} "
            f"(today is {today.isoformat()}): get a renewed consent and update the Consent Record.")


# ------------------------------------------------------------------------------------------
# Policy
# ------------------------------------------------------------------------------------------

def load_policy(policy_dir: str) -> dict:
    """The checked policy (engine/provenance/policy.py); PolicyError when it cannot be used."""
    return policy_schema.load(policy_dir)


def check_generation(consent: ConsentRecord | None, policy: dict, today: datetime.date | None = None) -> None:
    """Before sampling: an attached record must be unexpired; with require_consent, one must exist."""
    if consent is not None:
        check_record(consent, today)
        return
    if policy.get("require_consent"):
        raise ConsentError(
            "This server requires a consent record for every identity video (require_consent in the "
            "Stand-In policy file), and this identity has none. Add a Consent Record node between "
            "Encode Reference Face and Apply Stand-In Identity, with who consented, the purpose, the "
            "date the consent is valid until, and the id or sha256 of the signed document.")
