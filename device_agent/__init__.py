"""The device agent: receives bundles, builds engines with the device's own TensorRT, runs them.

Imports nothing from `host` and, at module level, nothing beyond grpcio, protobuf and numpy.
"""

__version__ = "0.1.0"
