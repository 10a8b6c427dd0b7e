"""The MoE-MAE model: build, encode, embed, pretrain forward, and safe checkpoint I/O.

>>> from geomoe.model import build_model, load_checkpoint
>>> model = build_model("S")                 # img 40, patch 4, 7 bands
>>> images = torch.from_numpy(model.preprocess(batch.pixels))  # DN -> z-scored with the weights' statistics
>>> out = model.encode(images)               # images (B, 7, 40, 40) float32
>>> out.tokens.shape                         # (B, 105, 144)
"""

from geomoe.model.checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint, save_published
from geomoe.model.compile import compile_for_inference, compile_for_training, uncompile
from geomoe.model.config import METADATA_ORDER, SIZES, ModelConfig, config_for
from geomoe.model.mae import POOLINGS, EncoderOutput, MAEOutput, ModelInputError, MoEMAE, build_model

__all__ = [
    "METADATA_ORDER", "POOLINGS", "SIZES", "EncoderOutput", "MAEOutput", "ModelConfig", "ModelInputError",
    "MoEMAE", "build_model", "checkpoint_sha256", "compile_for_inference", "compile_for_training", "config_for", "load_checkpoint", "save_checkpoint",
    "save_published", "uncompile",
]
