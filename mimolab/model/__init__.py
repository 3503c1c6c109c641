"""mimolab's MiMo-VL model: one file per concept.

vision.py (Qwen2.5-ViT), projector.py (patch merger), language.py (MiMo-7B decoder + KV cache),
positions.py (2D and 3D rotary positions), attention.py (SDPA / eager / flash-attn), vlm.py (the
model that joins them), checkpoint.py (the only file that reads or writes weights), generation.py.
"""

from mimolab.model.summary import parameter_table
from mimolab.model.vlm import MiMoVL, MiMoVLOutput

__all__ = ["MiMoVL", "MiMoVLOutput", "parameter_table"]
