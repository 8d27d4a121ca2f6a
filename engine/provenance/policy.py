"""The server-wide policy file and its schema (importable without ComfyUI).

``user/__standin/policy.json`` (the ``__`` prefix keeps it out of ComfyUI's HTTP user-data
API). Without the file nothing is required, so artists are not blocked. A file that exists in
any form but cannot be read, parsed or checked refuses every identity generation: a policy that
silently turned into "no policy" would run generations unchecked.

Every value is checked against ``SCHEMA`` (type, range, known keys) when the file is read, so
a mistake is reported at queue time with the setting's name, not as a Python error in the save
node after sampling.
"""

from __future__ import annotations

import json
import os
import stat

POLICY_FILE = "policy.json"
FIX = "fix the file or remove it (no file: nothing is required)"


class PolicyError(ValueError):
    """The policy file cannot be read or breaks the schema; generation is refused rather than run
    unchecked."""


class _Setting:
    def __init__(self, kind, default, help, low=None, high=None, choices=None, nullable=False):
        self.kind, self.default, self.help = kind, default, help
        self.low, self.high, self.choices, self.nullable = low, high, choices, nullable

    def check(self, name: str, value):
        """The problem with ``value`` as text, or None."""
        if value is None:
            return None if self.nullable else f"{name} is null; {self.help}"
        # bool is an int in Python, and "false" is a truthy string: both must be refused.
        if self.kind is bool and not isinstance(value, bool):
            return f"{name} is {json.dumps(value)}; write true or false without quotes"
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{name} is {json.dumps(value)}; {self.help}"
        if self.kind is str and not isinstance(value, str):
            return f"{name} is {json.dumps(value)}; {self.help}"
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            return f"{name} is {value}; {self.help}"
        if self.choices is not None and value not in self.choices:
            return f"{name} is {json.dumps(value)}; use one of {', '.join(self.choices)}"
        if self.kind is str and not value.strip() and not self.nullable:
            return f"{name} is empty; {self.help}"
        return None


SIGNING_ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")

SCHEMA = {
    "require_consent": _Setting(bool, False, "true refuses identity generations without a valid consent record"),
    "audit": {
        "enabled": _Setting(bool, True, "true writes one audit line per labelled save"),
        "include_prompts": _Setting(bool, False, "true stores text prompts, false only their sha256"),
        "include_reference_image": _Setting(bool, False, "true stores the reference as a PNG"),
        "max_bytes": _Setting(int, 10 * 2**20, "give the size at which the log rotates as a whole number of "
                                               "bytes between 1 and 1099511627776 (e.g. 10485760 for 10 MB)",
                              low=1, high=2**40),
        "backups": _Setting(int, 5, "give the number of rotated files to keep when delete_old_files is true, "
                                    "a whole number between 1 and 100000", low=1, high=100000),
        # Off: rotation renames and keeps every file. On: files beyond `backups` are deleted, and
        # each deletion is written into the log as its own event.
        "delete_old_files": _Setting(bool, False, "true deletes rotated files beyond `backups` (each deletion "
                                                  "is logged); false keeps every file"),
    },
    "signing": {
        "certificate": _Setting(str, None, "give the path of a PEM certificate chain (signer first)", nullable=True),
        "private_key": _Setting(str, None, "give the path of the PEM private key of that certificate", nullable=True),
        "algorithm": _Setting(str, "es256", "", choices=SIGNING_ALGORITHMS),
        "timestamp_url": _Setting(str, None, "give an http(s) URL of an RFC 3161 time-stamp service, or null",
                                  nullable=True),
        # A generation takes minutes to hours; a certificate that expires meanwhile would fail
        # the signature after sampling.
        "min_valid_hours": _Setting(int, 24, "give the hours the certificate must stay valid for, a whole "
                                             "number between 0 and 8760", low=0, high=8760),
    },
}


def defaults(schema: dict = SCHEMA) -> dict:
    return {k: defaults(v) if isinstance(v, dict) else v.default for k, v in schema.items()}


DEFAULT_POLICY = defaults()


def check(given, path: str = POLICY_FILE) -> dict:
    """``given`` (the parsed file) over the defaults; PolicyError naming every problem at once."""
    problems = []

    def walk(schema: dict, value, prefix: str) -> dict:
        out = {}
        if not isinstance(value, dict):
            problems.append(f"{prefix.rstrip('.') or 'the file'} must be a JSON object {{...}}, not "
                            f"{json.dumps(value)[:60]}")
            return defaults(schema)
        unknown = sorted(set(value) - set(schema))
        for key in unknown:
            problems.append(f"unknown setting {prefix}{key} (known here: {', '.join(sorted(schema))})")
        for key, spec in schema.items():
            name = prefix + key
            if isinstance(spec, dict):
                out[key] = walk(spec, value[key], name + ".") if key in value else defaults(spec)
            elif key in value:
                problem = spec.check(name, value[key])
                if problem:
                    problems.append(problem)
                out[key] = value[key]
            else:
                out[key] = spec.default
        return out

    policy = walk(SCHEMA, given, "")
    if not problems:
        url = policy["signing"]["timestamp_url"]
        if url is not None and not url.lower().startswith(("http://", "https://")):
            problems.append(f"signing.timestamp_url is {json.dumps(url)}; give an http(s) URL or null")
        if bool(policy["signing"]["certificate"]) != bool(policy["signing"]["private_key"]):
            problems.append("signing names only one of certificate and private_key; give both (PEM files) or "
                            "neither (the installation's self-signed key)")
    if problems:
        raise PolicyError(f"The Stand-In policy file {path} is not valid: " + "; ".join(problems)
                          + f". Identity generations are refused until you {FIX}.")
    return policy


def load(policy_dir: str) -> dict:
    """The checked policy, read at every use (an edit takes effect without restarting ComfyUI)."""
    path = os.path.join(policy_dir, POLICY_FILE)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return defaults()
    except OSError as e:
        raise PolicyError(f"The Stand-In policy file {path} cannot be checked ({e.strerror}): make its folder "
                          f"readable by the user running ComfyUI. Identity generations are refused until "
                          f"then.") from None
    if stat.S_ISLNK(st.st_mode) and not os.path.exists(path):
        raise PolicyError(f"The Stand-In policy file {path} is a link to {os.readlink(path)}, which does not "
                          f"exist: point the link at the policy file or remove it. Identity generations are "
                          f"refused until then.")
    if os.path.isdir(path):
        raise PolicyError(f"The Stand-In policy file {path} is a folder, not a file: remove the folder and, if "
                          f"you want a policy, write it as a JSON file there. Identity generations are refused "
                          f"until then.")
    try:
        with open(path, "rb") as f:
            raw = f.read(2**20 + 1)
    except OSError as e:
        raise PolicyError(f"The Stand-In policy file {path} cannot be read ({e.strerror}): let the user running "
                          f"ComfyUI read it (e.g. chmod 644). Identity generations are refused until then.") from None
    if len(raw) > 2**20:
        raise PolicyError(f"The Stand-In policy file {path} is over 1 MB: a policy is a few lines of JSON; "
                          f"{FIX}. Identity generations are refused until then.")
    try:
        given = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"The Stand-In policy file {path} is not UTF-8 text: save it as UTF-8 JSON. Identity "
                          f"generations are refused until then.") from None
    except ValueError as e:
        raise PolicyError(f"The Stand-In policy file {path} is not valid JSON ({e}): {FIX}. Identity "
                          f"generations are refused until then.") from None
    return check(given, path)
