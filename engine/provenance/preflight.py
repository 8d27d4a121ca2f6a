"""Everything the labelled save needs, checked before sampling (importable without ComfyUI).

Apply Stand-In Identity (and, at queue time, its ``validate_inputs``) runs these so that a fault
known before sampling never costs a generation: the policy file against its schema, the signing
credentials (a test signature included), the audit log's folder and file, and each identity's
consent record. The consent check takes ONE record, so a node applying several identities calls
it once per identity.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from . import audit, c2pa_label, consent, policy as policy_schema


class PreflightError(ValueError):
    """A fault that would make the labelled save fail; its text says what to do."""


@dataclass
class Ready:
    policy: dict
    key: c2pa_label.SigningKey


def audit_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "audit")


def audit_log(state_dir: str, policy: dict) -> audit.AuditLog:
    cfg = policy["audit"]
    return audit.AuditLog(audit_dir(state_dir), cfg["max_bytes"], cfg["backups"],
                          delete_old_files=cfg["delete_old_files"])


def describe_os_error(e: OSError, what: str) -> str:
    """An OSError as a sentence naming the path and what to do."""
    path = getattr(e, "filename2", None) or e.filename or ""  # link/rename: the destination
    reason = e.strerror or str(e)
    if isinstance(e, IsADirectoryError):
        fix = "a folder stands where the file belongs: move it away"
    elif isinstance(e, PermissionError):
        fix = ("ComfyUI's user may not write there: give it write permission (and, if the file was made "
               "immutable or append-only with chattr, remove that attribute)")
    elif isinstance(e, FileExistsError):
        fix = "another save took that name at the same moment: run the save again"
    elif isinstance(e, FileNotFoundError):
        fix = "a folder on the way is missing: create it"
    elif e.errno == 28:
        fix = "the disk is full: free some space"
    elif e.errno == 30:
        fix = "the file system is read-only: point ComfyUI's user directory at a writable place"
    else:
        fix = "check the path and its permissions"
    return f"{what} {path} failed ({reason}): {fix}"


def _stamp(path) -> tuple | None:
    try:
        st = os.lstat(path)
        return st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino
    except (OSError, TypeError, ValueError):
        return None


# One prompt asks up to four times within a second (the queue check and ComfyUI's validation of
# Apply and the save, then Apply itself); a success is remembered for a few seconds, and only
# while none of the files it read has changed.
_REMEMBER_S = 10.0
_last_success: dict = {}


def _files_key(state_dir: str, policy: dict | None) -> tuple:
    paths = [os.path.join(state_dir, policy_schema.POLICY_FILE), os.path.join(state_dir, "signing")]
    paths.append(os.path.join(state_dir, "signing", c2pa_label.INSTALLATION_KEY_FILE))
    if policy is not None:
        paths += [policy["signing"]["certificate"], policy["signing"]["private_key"]]
    paths += [audit_dir(state_dir), os.path.join(audit_dir(state_dir), audit.LOG_NAME)]
    return tuple((p, _stamp(os.path.expanduser(p) if isinstance(p, str) else p)) for p in paths)


def server_checks(state_dir: str, now: datetime.datetime | None = None) -> Ready:
    """The policy, the signing key and the audit log, as the labelled save will use them;
    PreflightError otherwise."""
    import time
    remembered = _last_success.get(state_dir)
    if now is None and remembered is not None:
        when, key, ready = remembered
        if time.monotonic() - when < _REMEMBER_S and key == _files_key(state_dir, ready.policy):
            return ready
    ready = _server_checks(state_dir, now)
    if now is None:
        _last_success[state_dir] = (time.monotonic(), _files_key(state_dir, ready.policy), ready)
    return ready


def policy_check(state_dir: str) -> dict:
    """The policy alone: what every identity generation needs, labelled or not."""
    try:
        return policy_schema.load(state_dir)
    except policy_schema.PolicyError as e:
        raise PreflightError(str(e)) from None


def _server_checks(state_dir: str, now: datetime.datetime | None) -> Ready:
    policy = policy_check(state_dir)
    try:
        key = c2pa_label.signing_key(policy["signing"], os.path.join(state_dir, "signing"))
        c2pa_label.check_signing_key(key, policy["signing"]["min_valid_hours"], now)
    except c2pa_label.ProvenanceError as e:
        raise PreflightError(f"Labelled saves could not be signed: {e}") from None
    except OSError as e:
        raise PreflightError(describe_os_error(e, "Reading or creating the signing key")) from None
    if policy["audit"]["enabled"]:
        try:
            audit_log(state_dir, policy).check_writable()
        except OSError as e:
            raise PreflightError(describe_os_error(e, "Writing the Stand-In audit log") +
                                 ". Labelled saves are refused while the audit log cannot be written "
                                 "(or set audit.enabled to false in the policy).") from None
    return Ready(policy, key)


def check_identity_consent(record: consent.ConsentRecord | None, policy: dict,
                           today: datetime.date | None = None) -> None:
    """ONE identity's consent against the policy: limits, expiry, require_consent."""
    try:
        consent.check_generation(record, policy, today)
    except consent.ConsentError as e:
        raise PreflightError(str(e)) from None
