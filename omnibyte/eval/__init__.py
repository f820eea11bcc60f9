from omnibyte.eval.bpb import bits_per_byte

__all__ = ["bits_per_byte"]
