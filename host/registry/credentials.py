"""The host's registry client from `--registry` and the environment; secrets come from files, never flags."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

from device_agent.errors import InvalidInput
from device_agent.registry import Credentials, RegistryClient, RegistryRef


def registry_client(address: str, environ: Optional[Mapping[str, str]] = None) -> RegistryClient:
    """`$DEPLOY_REGISTRY_TOKEN_FILE`, or `$DEPLOY_REGISTRY_USER` + `$DEPLOY_REGISTRY_PASSWORD_FILE`; CA in
    `$DEPLOY_REGISTRY_CA` (the fleet CA file)."""
    env = os.environ if environ is None else environ

    def path(name: str) -> Optional[Path]:
        value = env.get(name, "").strip()
        if not value:
            return None
        if not Path(value).is_file():
            raise InvalidInput(f"${name} names {value}, which is not a file")
        return Path(value)

    creds = Credentials.from_files(path("DEPLOY_REGISTRY_TOKEN_FILE"), env.get("DEPLOY_REGISTRY_USER", ""),
                                   path("DEPLOY_REGISTRY_PASSWORD_FILE"), path("DEPLOY_REGISTRY_CA"))
    return RegistryClient(RegistryRef.parse(address), creds)
