"""The one thing pyproject.toml cannot say with every setuptools: the optional C chunker.

snapstore._cdc computes FastCDC cut points exactly as the fastcdc package does, but without
holding the GIL and stepping over zero runs (see snapstore/_cdc.c). It is optional: where it
cannot be built, snapstore uses the fastcdc package alone and gives the same chunks.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("snapstore._cdc", ["snapstore/_cdc.c"], optional=True)])
