#!/usr/bin/env python3
"""Check a file's C2PA manifest: is there one, is it valid, what does it say, was the file
changed after signing.

    python tools/verify_provenance.py FILE [--json]

Exit status 0 only for a valid manifest on an unmodified file; 1 when the manifest is invalid
or the file was changed; 2 when the file carries no manifest (or cannot be read).
A self-signed (installation) key is reported as an untrusted signer, which does not make the
manifest invalid: it proves the file is unchanged, not who signed it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_provenance():
    spec = importlib.util.spec_from_file_location("standin_provenance", os.path.join(ROOT, "engine", "provenance", "c2pa_label.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true", help="print the whole report (and manifest) as JSON")
    args = parser.parse_args(argv)
    provenance = load_provenance()
    report = provenance.verify(args.file)
    if args.json:
        print(json.dumps(dict(report.summary(), manifest=report.manifest), indent=2, ensure_ascii=False))
    else:
        print(f"file: {args.file}")
        if not report.has_manifest:
            print(f"no valid C2PA manifest: {report.error or 'none found'}")
        else:
            print(f"manifest: {report.label}")
            print(f"validation: {report.state} -> {'VALID' if report.valid else 'INVALID'}")
            print(f"modified after signing: {'YES' if report.modified else 'no'}")
            print(f"AI-generated (trainedAlgorithmicMedia): {'yes' if report.ai_generated else 'no'}")
            signer = report.manifest.get("signature_info", {})
            trust = "trusted" if report.trusted else "untrusted"
            if report.self_signed:
                trust += ", self-signed installation key"
            print(f"signer: {signer.get('common_name', '?')} / {signer.get('issuer', '?')} ({trust})")
            for line in report.failures:
                print(f"  failure: {line}")
            for line in report.notes:
                print(f"  note: {line}")
            if report.generation:
                print("generation record:")
                print(json.dumps(report.generation, indent=2, ensure_ascii=False))
    if not report.has_manifest:
        return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
