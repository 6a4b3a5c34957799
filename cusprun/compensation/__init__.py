"""Compensation without training: after units are removed, correct what is kept in closed form
from calibration activations (bias compensation, least-squares refit of kept columns)."""
from cusprun.compensation.apply import mask_model
from cusprun.compensation.config import MODES, CompensationConfig
from cusprun.compensation.grams import GramSet, LayerGrams, collect_grams
from cusprun.compensation.solve import compensate

__all__ = ["MODES", "CompensationConfig", "GramSet", "LayerGrams", "collect_grams", "compensate",
           "mask_model"]
