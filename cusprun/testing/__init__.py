"""Helpers for tests and benchmarks: tiny random models of every supported family."""
from cusprun.testing.tiny import TINY_FAMILIES, make_tiny_model, tiny_config, tiny_tokenizer

__all__ = ["TINY_FAMILIES", "make_tiny_model", "tiny_config", "tiny_tokenizer"]
