"""The compiled core, ``fastprof._core``, for the layers to import from here.

The import graph that enforces the layers reads source files, and a compiled module has none:
it would take ``import fastprof._core`` for an import of the package root (and so of every
layer). The one exception in ``[tool.importlinter]`` is this module's import.
"""

from fastprof import _core

__all__ = ["_core"]
