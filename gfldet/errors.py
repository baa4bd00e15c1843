"""The one type of an error the user caused, :class:`GfldetError`. Imports nothing (no gfldet module, no torch), so
that every layer can raise it, the torch-free runtime of :mod:`gfldet.deploy` included (the bottom of the layer map
in tests/test_layers.py).

The rule: a mistake of the user's (a bad argument or config value, a malformed file, an unsupported combination of
settings, an image or target that is not what it must be) raises :class:`GfldetError` or one of its subclasses
(``ConfigError``, ``PretrainedError``, ``DatasetError``, ``NonFiniteLossError``), with a message that names the
value and the fix. A plain ``ValueError`` is left for what only a bug can cause (two tensors of gfldet's own making
that do not fit, a case that cannot happen). The command line shows a :class:`GfldetError` (or an ``OSError``) as
one line and exit code 2, and anything else with its traceback.
"""
from __future__ import annotations

__all__ = ["GfldetError"]


class GfldetError(ValueError):
    """An error the user caused (a bad value, a malformed file, an unsupported combination); the message says what
    and how to fix it. A ``ValueError``, so that code that catches ``ValueError`` catches it too."""
