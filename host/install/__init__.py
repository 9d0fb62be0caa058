"""Putting an agent on a device over SSH: host-key checks, wheels, service, inventory."""
