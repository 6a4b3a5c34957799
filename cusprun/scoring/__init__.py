"""Activation statistics of calibration corpora, from one pass over the model: per-document rank
percentiles of FFN neurons and query heads (exact impacts), per-channel input moments for the
baselines, and the compensation Grams."""
from cusprun.scoring.collect import CorpusJob, collect_corpora, collect_grams, collect_stats
from cusprun.scoring.percentile import rank_percentile
from cusprun.scoring.stats import DimensionStats, load_stats, save_stats

__all__ = ["CorpusJob", "DimensionStats", "collect_corpora", "collect_grams", "collect_stats",
           "load_stats", "rank_percentile", "save_stats"]
