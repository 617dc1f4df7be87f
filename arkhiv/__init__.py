"""Arkhiv: an OAIS preservation archive for 3D cultural heritage."""

__version__ = "0.1.0"
