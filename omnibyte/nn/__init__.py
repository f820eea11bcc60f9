from omnibyte.nn.cache import KVCache
from omnibyte.nn.layers import (
    Attention,
    Block,
    RMSNorm,
    StackConfig,
    SwiGLU,
    TransformerStack,
    apply_rope,
    causal_mask,
    mean_keys,
    mlp_hidden,
    rope_tables,
    stack_flops,
)
from omnibyte.nn.loss import distill_loss, lm_loss, nll_sums
from omnibyte.nn.window_attention import window_attention

__all__ = ["KVCache", "Attention", "Block", "RMSNorm", "StackConfig", "SwiGLU", "TransformerStack", "apply_rope",
           "causal_mask", "distill_loss", "lm_loss", "mean_keys", "mlp_hidden", "nll_sums", "rope_tables",
           "stack_flops", "window_attention"]
