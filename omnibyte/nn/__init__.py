from omnibyte.nn.cache import KVCache
from omnibyte.nn.layers import (
    Attention,
    Block,
    RMSNorm,
    SwiGLU,
    TransformerStack,
    apply_rope,
    causal_mask,
    mlp_hidden,
    rope_tables,
)
from omnibyte.nn.loss import lm_loss, nll_sums
from omnibyte.nn.window_attention import window_attention

__all__ = ["KVCache", "Attention", "Block", "RMSNorm", "SwiGLU", "TransformerStack", "apply_rope",
           "causal_mask", "mlp_hidden", "rope_tables", "lm_loss", "nll_sums", "window_attention"]
