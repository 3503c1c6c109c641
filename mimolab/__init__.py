"""mimolab: a notebook-driven research workbench for MiMo-VL-style vision-language models.

The names below are imported on first use (PEP 562), so ``import mimolab`` and ``mimolab --help``
stay fast and never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "MiMoVLConfig": "mimolab.config",
    "TextConfig": "mimolab.config",
    "VisionConfig": "mimolab.config",
    "PRESETS": "mimolab.config",
    "MiMoVL": "mimolab.model",
    "MiMoVLOutput": "mimolab.model",
    "parameter_table": "mimolab.model",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mimolab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
