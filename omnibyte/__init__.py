"""omnibyte: tokenizer-free byte-level transformers for text, images and audio."""

__version__ = "0.1.0"
