"""parcelhook: a self-hostable webhook feedback service for shipping platforms."""

__version__ = "0.1.0"
