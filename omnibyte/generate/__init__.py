from omnibyte.generate.constraints import Constraint, TextOnly
from omnibyte.generate.sampling import SamplingConfig, filter_logits, generate

__all__ = ["Constraint", "TextOnly", "SamplingConfig", "filter_logits", "generate"]
