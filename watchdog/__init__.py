"""fwatchdog: runs a process for every HTTP request, like the OpenFaaS classic watchdog."""

__version__ = "0.1.0"

__all__ = ["__version__"]
