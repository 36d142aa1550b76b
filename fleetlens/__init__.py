"""fleetlens: GPU fleet telemetry and utilization analytics."""

__version__ = "0.1.0"
