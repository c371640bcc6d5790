"""lab: the socketlab controller (CLI ``lab`` and a Python API)."""

__version__ = "0.1.0"
