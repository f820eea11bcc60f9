from omnibyte.models.base import ModelOutput, OmniModel
from omnibyte.models.registry import build_model, get_model_class, register

__all__ = ["ModelOutput", "OmniModel", "build_model", "get_model_class", "register"]
