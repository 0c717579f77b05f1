"""Fuzz targets for every parser of on-disk bytes (see targets.py)."""
