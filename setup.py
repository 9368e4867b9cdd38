"""The native rANS core (shared/_rans.c -> facelink.shared._rans); everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the install still succeeds and facelink.shared.rans runs its pure
Python coder (same bytes, slower).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("facelink.shared._rans", ["shared/_rans.c"], optional=True)])
