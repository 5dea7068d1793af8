"""Kept for tools that still call setup.py; all metadata lives in pyproject.toml.

The C++ collapse extension (csrc/collapse.cpp) is deliberately *not* built here: it is
compiled on first use by torch.utils.cpp_extension.load against the installed torch,
so `pip install -e .` never needs torch inside an isolated build environment.
"""
from setuptools import setup

setup()
