"""Data Transfer Hub: engines, spec model and command line."""

__version__ = "0.1.0"
