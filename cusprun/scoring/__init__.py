"""Impact statistics: per-document rank percentiles of FFN neurons and query heads, exact from
one hooked forward pass, plus per-channel input moments for the baselines."""
from cusprun.scoring.collect import collect_stats
from cusprun.scoring.percentile import rank_percentile
from cusprun.scoring.stats import DimensionStats, load_stats, save_stats

__all__ = ["DimensionStats", "collect_stats", "load_stats", "rank_percentile", "save_stats"]
