"""Inventory, device classes, fan-out and engine-cache warming."""
