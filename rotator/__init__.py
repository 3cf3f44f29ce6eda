"""rotator: crash-safe rotation of InfluxDB tokens into secret stores."""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
