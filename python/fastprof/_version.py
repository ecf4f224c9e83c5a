"""fastprof's version: the one place it is written.

pyproject.toml reads it for the package metadata (scikit-build-core's regex provider), ``fastprof
--version`` shows it, and every result's environment records it.
"""

__version__ = "0.1.0"
