"""Provenance: consent records and policy, C2PA labels, the audit log."""
