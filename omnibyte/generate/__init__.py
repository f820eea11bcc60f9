from omnibyte.generate.constraints import Constraint, TextOnly
from omnibyte.generate.sampling import DecodeBatch, SamplingConfig, filter_logits, generate

__all__ = ["Constraint", "DecodeBatch", "TextOnly", "SamplingConfig", "filter_logits", "generate"]
