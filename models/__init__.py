"""Aggregators: the label-free Weaver label model, its baselines and their evaluation.

This package imports neither ``workers`` nor ``service``: it runs without a web server or a GPU.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
