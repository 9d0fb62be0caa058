"""Everything that runs on the developer's machine: compiler, agent client, fleet, CLI."""

from device_agent import __version__

__all__ = ["__version__"]
