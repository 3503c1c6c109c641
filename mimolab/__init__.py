"""mimolab: a notebook-driven research workbench for MiMo-VL-style vision-language models."""

from mimolab.config import PRESETS, MiMoVLConfig, TextConfig, VisionConfig
from mimolab.model import MiMoVL, MiMoVLOutput, parameter_table

__all__ = ["MiMoVL", "MiMoVLOutput", "MiMoVLConfig", "TextConfig", "VisionConfig", "PRESETS", "parameter_table"]
__version__ = "0.1.0"
