"""Moved to `host.inventory` (the client and the pipeline use it; the fleet stands above them).

Kept for one transition: scripts still being edited import the old path."""
from host.inventory import *  # noqa: F401,F403
from host.inventory import Device, Inventory, LOCAL, TlsFiles, load, resolve  # noqa: F401
