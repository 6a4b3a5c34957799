"""Compensation without training: after units are removed, correct what is kept in closed form
from calibration Grams (bias compensation, least-squares refit of kept columns). The Grams are
collected by cusprun.scoring.grams; in-memory application lives in cusprun.engine.pruned."""
from cusprun.compensation.config import MODES, CompensationConfig, check_bias_support
from cusprun.compensation.gram_set import GramSet, LayerGrams
from cusprun.compensation.layer import compensated_projections, head_channels
from cusprun.compensation.means import ChannelMeans
from cusprun.compensation.solve import compensate

__all__ = ["MODES", "ChannelMeans", "CompensationConfig", "GramSet", "LayerGrams",
           "check_bias_support", "compensate", "compensated_projections", "head_channels"]
