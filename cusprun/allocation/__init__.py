"""Budget allocation by measured damage: which head structure and which FFN width per layer,
chosen by the held-back loss of masked (and compensated) candidates."""
from cusprun.allocation.probe import DamageProbe
from cusprun.allocation.search import SearchResult, Trial, layer_errors, search_allocation

__all__ = ["DamageProbe", "SearchResult", "Trial", "layer_errors", "search_allocation"]
