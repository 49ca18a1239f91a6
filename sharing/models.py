"""Sharing deployments with organizations, access policies and the audit log (governance)."""
