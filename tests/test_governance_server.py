"""The consent / label / audit chain fails closed and loses nothing, through a real ComfyUI server
(tiny models): each fault that can be known before sampling refuses the prompt (HTTP 400, the
node's message naming the fix, nothing runs); a fault that appears after sampling leaves no file
in output/ and keeps the frames in the quarantine folder the error names; output/ never holds a
file without a valid manifest and an audit line.

One server for every case (the session's); the queue-time cases run nothing, so each costs
milliseconds, and the few after-sampling cases run one tiny generation each."""

import datetime
import glob
import json
import os
import re
import subprocess
import uuid

import pytest

import conftest
from comfy_server import PromptRejected, free_port
from test_server_e2e import assert_success, error_message, output_files, tiny

provenance = conftest.pack_module("engine.provenance.c2pa_label")
audit = conftest.pack_module("engine.provenance.audit")

GRAPH = "standin_wan21_t2v_sample_video"
APPLY, SAMPLER, ENCODE, CREATE, SAVE = "11", "13", "8", "20", "21"
MEDIA = (".mp4", ".mov", ".png", ".webp")
NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(scope="module")
def server(comfy_server):
    return comfy_server


def state(server, *parts):
    return os.path.join(server.base_dir, "user", "__standin", *parts)


def output_media(server) -> set:
    out = os.path.join(server.base_dir, "output")
    return {p for p in glob.glob(os.path.join(out, "**", "*"), recursive=True) if p.endswith(MEDIA)}


def audit_lines(server) -> list:
    files = [f for f in audit.AuditLog(state(server, "audit")).files() if os.path.isfile(f)]
    return audit.read(files)[0]


class Setup:
    """Writes the policy (and any other files) for one case and restores the state after."""

    def __init__(self, server, policy=None, raw=None):
        self.server, self.policy, self.raw = server, policy, raw
        self.path = state(server, "policy.json")
        self.undo = []

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if self.raw is not None:
            self.raw(self.path)
        elif self.policy is not None:
            with open(self.path, "w") as f:
                json.dump(self.policy, f)
        self.media_before = output_media(self.server)
        self.audit_before = len(audit_lines(self.server))
        return self

    def __exit__(self, *exc):
        for fn in reversed(self.undo):
            fn()
        if os.path.islink(self.path) or os.path.isfile(self.path):
            os.remove(self.path)
        elif os.path.isdir(self.path):
            os.rmdir(self.path)

    def new_media(self):
        return output_media(self.server) - self.media_before

    def new_audit(self):
        return audit_lines(self.server)[self.audit_before:]


def assert_output_clean(server, new_files):
    """Every new file in output/ carries a valid manifest and has its audit line (same sha256)."""
    logged = {o["sha256"] for e in audit_lines(server) for o in e.get("outputs", [])}
    for path in new_files:
        report = provenance.verify(path)
        assert report.ok and report.ai_generated, (path, report.summary())
        assert provenance.sha256_file(path) in logged, f"{path} has no audit line"


def refused(server, prompt):
    """The HTTP 400 answer of a prompt refused at queue time, as {node_id: [messages]}."""
    with pytest.raises(PromptRejected) as err:
        server.queue(prompt)
    assert err.value.status == 400, err.value.body
    return {nid: [e.get("details", "") for e in node["errors"]] for nid, node in err.value.body["node_errors"].items()}


# ------------------------------------------------------------------------------------------
# Certificates for the signing cases
# ------------------------------------------------------------------------------------------

def _pem_chain(tmp, name, not_before, not_after, key_of_other=False, damage_key=False, key=None):
    """A root and a signing certificate it issued (as C2PA wants), written as PEM files;
    returns (certificate chain path, private key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def usage(sign):
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
                             crl_sign=not sign, encipher_only=False, decipher_only=False)

    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test root {name}")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=3000)).not_valid_after(NOW + datetime.timedelta(days=3000))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage(False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    key = key or ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(root_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    if key_of_other:
        key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if damage_key:
        lines = key_pem.splitlines(keepends=True)
        lines[2] = b"A" * (len(lines[2]) - 1) + b"\n"  # a body line overwritten: base64 still, DER broken
        key_pem = b"".join(lines)
    cert_path, key_path = os.path.join(tmp, f"{name}.pem"), os.path.join(tmp, f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(pem) + root.public_bytes(pem))
    with open(key_path, "wb") as f:
        f.write(key_pem)
    return cert_path, key_path


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from cryptography.hazmat.primitives.asymmetric import ec
    tmp = str(tmp_path_factory.mktemp("certs"))
    day = datetime.timedelta(days=1)
    key = ec.generate_private_key(ec.SECP256R1())
    return {
        "good": _pem_chain(tmp, "good", NOW - day, NOW + 365 * day, key=key),
        "expired_same_key": _pem_chain(tmp, "expired_same_key", NOW - 30 * day, NOW - day, key=key),
        "expired": _pem_chain(tmp, "expired", NOW - 30 * day, NOW - day),
        "not_yet_valid": _pem_chain(tmp, "not_yet_valid", NOW + 2 * day, NOW + 365 * day),
        "expires_soon": _pem_chain(tmp, "expires_soon", NOW - day, NOW + datetime.timedelta(hours=2)),
        "other_key": _pem_chain(tmp, "other_key", NOW - day, NOW + 365 * day, key_of_other=True),
        "damaged_key": _pem_chain(tmp, "damaged_key", NOW - day, NOW + 365 * day, damage_key=True),
    }


def signing(certs, which, **extra):
    cert, key = certs[which]
    return {"signing": {"certificate": cert, "private_key": key, **extra}}


def with_consent(prompt, **fields):
    record = {"subject": "Eileen Collins", "purpose": "demo video, internal",
              "valid_until": (datetime.date.today() + datetime.timedelta(days=30)).isoformat(),
              "document_id": "NASA-PD-1", "document_sha256": ""}
    record.update(fields)
    prompt["30"] = {"class_type": "StandIn_ConsentRecord", "inputs": {"identity": [ENCODE, 0], **record}}
    prompt[APPLY]["inputs"]["identity"] = ["30", 0]
    prompt[SAVE]["inputs"]["identity"] = ["30", 0]
    return prompt


def make_dir(path):
    os.makedirs(path)


def dangling_link(path):
    os.symlink(path + ".missing", path)


def bad_json(path):
    with open(path, "w") as f:
        f.write('{"require_consent": true,')


# ------------------------------------------------------------------------------------------
# Known before sampling: refused when the prompt is queued (HTTP 400), nothing runs
# ------------------------------------------------------------------------------------------

POLICY_CASES = [
    # (case, policy or None, raw writer or None, text the Apply node's message must contain)
    ("string for a boolean", {"require_consent": "false"}, None, "require_consent is \"false\"; write true or false without quotes"),
    ("audit not an object", {"audit": "yes"}, None, "audit must be a JSON object"),
    ("signing null", {"signing": None}, None, "signing must be a JSON object"),
    ("max_bytes with a unit", {"audit": {"max_bytes": "10MB"}}, None, "audit.max_bytes is \"10MB\"; give the size"),
    ("unknown key", {"require_consnet": True}, None, "unknown setting require_consnet"),
    ("out of range", {"audit": {"backups": 0}}, None, "audit.backups is 0"),
    ("policy is a folder", None, make_dir, "is a folder, not a file"),
    ("dangling symlink", None, dangling_link, "which does not exist: point the link at the policy file or remove it"),
    ("bad JSON", None, bad_json, "is not valid JSON"),
]


def test_policy_faults_refuse_every_identity_generation_at_queue_time(server):
    for case, policy, raw, expected in POLICY_CASES:
        with Setup(server, policy, raw) as s:
            errors = refused(server, tiny(GRAPH, seed=7))
            assert APPLY in errors and len(errors[APPLY]) == 1, (case, errors)
            message = errors[APPLY][0]
            assert expected in message, (case, message)
            assert "policy.json" in message and "refused" in message, (case, message)
            assert not s.new_media() and not s.new_audit(), case


def test_signing_faults_refuse_at_queue_time(server, certs):
    closed_port = free_port()  # nothing listens there
    cases = [
        ("expired", signing(certs, "expired"), "expired on"),
        ("not yet valid", signing(certs, "not_yet_valid"), "is not valid before"),
        ("expires during the generation", signing(certs, "expires_soon"), "within the 24 hours a generation may take"),
        ("key of another certificate", signing(certs, "other_key"), "does not belong to the certificate"),
        ("damaged key body", signing(certs, "damaged_key"), "is damaged or not a PEM private key"),
        ("unreachable time-stamp service", signing(certs, "good", timestamp_url=f"http://127.0.0.1:{closed_port}/tsa"),
         "cannot be reached"),
        ("missing key file", {"signing": {"certificate": certs["good"][0], "private_key": "/nonexistent/key.pem"}},
         "cannot be read"),
        ("algorithm that does not suit the key", signing(certs, "good", algorithm="ps256"), "set signing.algorithm to es256"),
    ]
    for case, policy, expected in cases:
        with Setup(server, policy) as s:
            errors = refused(server, tiny(GRAPH, seed=7))
            # The labelled save refuses (Apply checks the signing files only in a prompt that
            # saves through one: a graph without a labelled save does not need them).
            (message,) = errors[SAVE]
            assert expected in message and "policy.json" in message, (case, message)
            assert not s.new_media() and not s.new_audit(), case
    # A graph that saves no labelled file does not need the signing files: it runs.
    with Setup(server, signing(certs, "expired")):
        prompt = tiny(GRAPH, seed=9, save_latent_prefix="governance/unlabelled")
        del prompt[SAVE], prompt[CREATE]
        assert_success(server, server.run(prompt, timeout=600))


def test_audit_log_faults_refuse_at_queue_time(server):
    log_path = state(server, "audit", audit.LOG_NAME)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    open(log_path, "ab").close()
    with open(log_path, "ab") as f:
        f.write(b'{"earlier": 1}\n')
    for attr, expected in (("+i", "Operation not permitted"), ("+a", "cannot be renamed when it rotates")):
        with Setup(server, {}) as s:
            if subprocess.run(["chattr", attr, log_path], capture_output=True).returncode != 0:
                pytest.fail("chattr is needed to make the audit log immutable / append-only here")
            s.undo.append(lambda: subprocess.run(["chattr", "-" + attr[1:], log_path], check=True))
            errors = refused(server, tiny(GRAPH, seed=7))
            (message,) = errors[SAVE]
            assert expected in message and log_path in message and "chattr" in message, (attr, message)
            assert not s.new_media(), attr
    # A folder where the log belongs.
    moved = log_path + ".moved"
    os.replace(log_path, moved)
    os.makedirs(log_path)
    with Setup(server, {}) as s:
        s.undo.append(lambda: (os.rmdir(log_path), os.replace(moved, log_path)))
        errors = refused(server, tiny(GRAPH, seed=7))
        assert "a folder stands where the file belongs" in errors[SAVE][0], errors
        assert not s.new_media()


def test_consent_field_faults_refuse_at_queue_time_once_each(server):
    cases = [
        ("1 MB subject", {"subject": "x" * 2**20}, "subject is 1048576 characters long"),
        ("lone surrogate", {"subject": "Eileen \ud800 Collins"}, "lone UTF-16 surrogate"),
        ("bidi override", {"subject": "Eileen \u202eCollins"}, "bidirectional control character (U+202E"),
        ("control character", {"purpose": "demo\x1b[31m"}, "control character (U+001B)"),
        ("1 MB purpose", {"purpose": "p" * 2**20}, "purpose is 1048576 characters long"),
        ("bad date", {"valid_until": "31/12/2030"}, "is not a date: write it as YYYY-MM-DD"),
    ]
    for case, fields, expected in cases:
        with Setup(server, None) as s:
            errors = refused(server, with_consent(tiny(GRAPH, seed=7), **fields))
            (message,) = errors["30"]  # once, not once per input
            assert expected in message, (case, message)
            assert not message.endswith(".."), message
            assert "\u202e" not in message and "\ud800" not in json.dumps(message), case  # not echoed
            assert len(message) < 1000, case
            assert not s.new_media() and not s.new_audit(), case


def test_missing_consent_is_refused_by_apply_before_sampling(server):
    events = []

    async def record(event, session):
        events.append(event)

    import asyncio
    with Setup(server, {"require_consent": True}) as s:
        _, final = asyncio.run(server.follow(tiny(GRAPH, seed=8), record, timeout=300))
        assert final["type"] == "execution_error" and final["data"]["node_id"] == APPLY
        assert "Consent Record node" in final["data"]["exception_message"]
        ran = [e["data"].get("node") for e in events if e["type"] == "executing"]
        assert SAMPLER not in ran and not [e for e in events if e["type"] == "progress"]
        assert not s.new_media() and not s.new_audit()


# ------------------------------------------------------------------------------------------
# Found only after sampling: nothing in output/, frames in the quarantine the error names
# ------------------------------------------------------------------------------------------

def with_fault(prompt, action, path, source_or_text=""):
    """A test node between the sampler's frames and Create Video doing one file action: the
    fault appears after sampling and before the save."""
    prompt["19"] = {"class_type": "StandInTest_FaultAfterSampling", "inputs": {
        "images": [SAMPLER, 1], "action": action, "path": path, "source_or_text": source_or_text}}
    prompt[CREATE]["inputs"]["images"] = ["19", 0]
    return prompt


QUARANTINE_RE = re.compile(r"kept as PNGs in (\S+frames) ")


def assert_quarantined(server, entry, expected, frames=5, size=(64, 64)):
    from PIL import Image
    assert entry["status"]["status_str"] == "error"
    node, message = error_message(entry)
    assert node == SAVE and expected in message and "Nothing was saved to output/" in message, message
    folder = QUARANTINE_RE.search(message).group(1)
    assert folder.startswith(state(server, "quarantine"))
    pngs = sorted(glob.glob(os.path.join(folder, "frame_*.png")))
    assert len(pngs) == frames, (folder, pngs)
    for png in pngs:
        image = Image.open(png)
        assert image.size == size and image.getextrema() != ((0, 0), (0, 0), (0, 0))
    assert os.path.isfile(os.path.join(os.path.dirname(folder), "REASON.txt"))
    return folder


def test_faults_after_sampling_keep_the_frames_and_publish_nothing(server, certs):
    import shutil
    log_path = state(server, "audit", audit.LOG_NAME)
    moved = log_path + ".moved-aside"
    cert, key = state(server, "case_cert.pem"), state(server, "case_key.pem")
    cases = [
        # The audit log turned into a folder while the generation ran.
        ("audit log became a folder", {}, ("mkdir", log_path, ""), "a folder stands where the file belongs"),
        # The certificate was replaced by an expired one (same key) while the generation ran.
        ("certificate expired meanwhile", {"signing": {"certificate": cert, "private_key": key}},
         ("copy", cert, certs["expired_same_key"][0]), "expired on"),
        # The policy file was damaged while the generation ran.
        ("policy damaged meanwhile", {}, ("write", state(server, "policy.json"), "{oops"), "is not valid JSON"),
    ]
    for i, (case, policy, fault, expected) in enumerate(cases):
        shutil.copyfile(certs["good"][0], cert)
        shutil.copyfile(certs["good"][1], key)
        with Setup(server, policy) as s:
            if fault[1] == log_path:
                if os.path.exists(log_path):
                    os.replace(log_path, moved)
                s.undo.append(lambda: (os.rmdir(log_path), os.path.exists(moved) and os.replace(moved, log_path)))
            entry = server.run(with_fault(tiny(GRAPH, seed=200 + i), *fault), timeout=600)
            assert_quarantined(server, entry, expected)
            assert not s.new_media(), (case, s.new_media())
            assert not s.new_audit(), case
    assert not glob.glob(state(server, "staging", "*", "*"))  # the staging folder is emptied whatever happened


def test_rotation_keeps_earlier_lines_and_a_good_run_publishes_a_signed_logged_file(server):
    log_dir = state(server, "audit")
    os.makedirs(log_dir, exist_ok=True)
    marker = uuid.uuid4().hex
    for i in range(48):
        audit.AuditLog(log_dir).append({"earlier": i, "marker": marker})
    with Setup(server, {"audit": {"max_bytes": 1, "backups": 2}}) as s:
        entry = server.run(tiny(GRAPH, seed=300), timeout=600)
        assert_success(server, entry)
        (video,) = [f for f in output_files(server, entry) if f.endswith(".mp4")]
        assert s.new_media() == {video}
        assert_output_clean(server, s.new_media())
        entries, broken = audit.read(audit.AuditLog(log_dir).files())
        assert [e["earlier"] for e in entries if e.get("marker") == marker] == list(range(48))  # none deleted
        rotations = [e for e in entries if e.get("event") == "audit_rotated"]
        assert rotations and not [e for e in entries if e.get("event") == "audit_files_deleted"]
        assert entries[-1]["outputs"][0]["sha256"] == provenance.sha256_file(video)
