"""Prometheus scrape targets for an inventory, in the `file_sd_configs` format, so the scrape config never lists
devices by hand: `deploy fleet prometheus-targets -o targets.json` after each change of `deploy.toml`."""
from __future__ import annotations

from typing import Any, Sequence

from host.inventory import Device

DEFAULT_METRICS_PORT = 9311  # what docs/operations.md starts agents with: --metrics-listen 0.0.0.0:9311


def _host(address: str) -> str:
    host = address.strip()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def scrape_targets(devices: Sequence[Device], metrics_port: int = DEFAULT_METRICS_PORT) -> list[dict[str, Any]]:
    """One target group per device: `HOST:metrics_port`, labelled with the device's name, profile and tags; a
    device with `tls` in the inventory is scraped over HTTPS (its agent serves /metrics with its certificate)."""
    groups = []
    for d in devices:
        host = _host(d.address)
        target = f"[{host}]:{metrics_port}" if ":" in host else f"{host}:{metrics_port}"
        labels = {"device": d.name, "profile": d.profile or "", "tags": ",".join(d.tags)}
        if d.tls is not None:
            labels["__scheme__"] = "https"
        groups.append({"targets": [target], "labels": labels})
    return groups
