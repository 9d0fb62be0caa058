"""Bundles and engines as OCI artifacts in a registry (docs/fleet.md, "Through a registry")."""
