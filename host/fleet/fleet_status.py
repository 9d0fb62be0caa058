"""`deploy fleet status NAME`: what each device serves of NAME, what the rollouts did to it, and which drifted.

Drift compares live facts with the record: each device's class (from its own GetInfo, as warming groups them)
should serve the bundle the last rollout that went forward recorded for that class; a device serving another
bundle, or none, drifted (someone activated by hand, a device restored from an image, a rollout not yet resumed).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from device_agent.errors import InvalidInput
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.fleet import rollout_db as rdb
from host.fleet.classes import classify
from host.fleet.fanout import DEFAULT_CONCURRENCY, RetryPolicy, fan_out
from host.fleet.states import device_state, summary_line
from host.inventory import Device

STATUS_TIMEOUT_S = 5.0


def _probe(device: Device, name: str, timeout: float) -> dict[str, Any]:
    """The device's class and NAME's active / previous version with the active one's bundle (None: no model)."""
    with AgentClient(device) as client:
        info = client.info(timeout=timeout)
        try:
            models = client.list_models(name, timeout=timeout).models
        except AgentError as exc:
            if exc.code.name != "NOT_FOUND":
                raise
            models = []
    out: dict[str, Any] = {"class": classify(info, device).label, "has_model": bool(models), "active": None,
                           "previous": None, "bundle_digest": None}
    if models:
        m = models[0]
        out["active"] = int(m.active) if m.HasField("active") else None
        out["previous"] = int(m.previous) if m.HasField("previous") else None
        for v in m.versions:
            if out["active"] is not None and int(v.version) == out["active"]:
                out["bundle_digest"] = v.bundle_digest
    return out


def fleet_status(name: str, devices: Sequence[Device], db: rdb.RolloutDB, *, timeout: float = STATUS_TIMEOUT_S,
                 concurrency: int = DEFAULT_CONCURRENCY) -> dict[str, Any]:
    """The documented `deploy fleet status --json` object. InvalidInput when no device and no rollout knows NAME."""
    rollouts = db.rollouts(name)
    expected = next((r for r in rollouts if r.state in rdb.WENT_FORWARD), None)
    last_steps = db.last_steps(name)
    outcomes = fan_out(list(devices), lambda d: _probe(d, name, timeout), concurrency=concurrency,
                       policy=RetryPolicy(attempts=1))  # a view: a down device is shown down, not waited for
    if not rollouts and not any(o.ok and o.value["has_model"] for o in outcomes):
        reached = sum(1 for o in outcomes if o.ok)
        raise InvalidInput(f"no device has a model named {name!r} ({reached} of {len(outcomes)} device(s) "
                           "answered) and no rollout of it is recorded; check the name (deploy models ls)")
    rows = []
    for o in outcomes:
        dev = o.item.name or o.item.address
        state = device_state(o.error)
        step = last_steps.get(dev)
        row: dict[str, Any] = {"device": dev, "address": o.item.address, "state": state.short,
                               "error": state.reason, "class": None, "active": None, "previous": None,
                               "bundle_digest": None, "expected_bundle": None, "drift": None,
                               "last_rollout": None}
        if step is not None:
            rid, s = step
            row["last_rollout"] = {"id": rid, **s.to_dict()}
        if o.ok:
            v = o.value
            row.update({k: v[k] for k in ("class", "active", "previous", "bundle_digest")})
            want = expected.bundles.get(v["class"]) if expected is not None else None
            row["expected_bundle"] = want
            row["drift"] = None if want is None else v["bundle_digest"] != want
        rows.append(row)
    return {
        "name": name,
        "devices": rows,
        "last_rollout": rollouts[0].to_dict() if rollouts else None,
        "expected_from": expected.id if expected is not None else None,
        "drifted": [r["device"] for r in rows if r["drift"]],
        "summary": summary_line([r["state"] for r in rows]),
    }


def short_digest(digest: Optional[str]) -> str:
    if not digest:
        return "-"
    return digest.split(":", 1)[-1][:12]
