"""Test support shared by tests/ and benchmarks/ (not shipped in the cusprun package): tiny
random models of every supported family with a byte tokenizer (tiny.py), and synthetic plans and
random model shapes (synthetic.py). Import as `tests.support`: pytest puts the repository root on
sys.path (pyproject.toml, pythonpath), and benchmarks run as modules from it (`python -m
benchmarks ...`)."""
from tests.support.synthetic import (plan_from_keeps, random_plan, smollm2_135m_shaped_config,
                                     uniform_plan_for_ratio, write_random_model)
from tests.support.tiny import TINY_FAMILIES, make_tiny_model, tiny_config, tiny_tokenizer

__all__ = ["TINY_FAMILIES", "make_tiny_model", "plan_from_keeps", "random_plan",
           "smollm2_135m_shaped_config", "tiny_config", "tiny_tokenizer", "uniform_plan_for_ratio",
           "write_random_model"]
