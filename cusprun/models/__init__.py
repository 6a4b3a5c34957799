"""Model sources (alias, local, S3, GGUF, hub), fingerprints, loading and summaries."""
from cusprun.models.fingerprint import model_fingerprint
from cusprun.models.loading import load_model
from cusprun.models.sources import ALIASES, DEFAULT_MODEL, ResolvedModel, resolve_model
from cusprun.models.summary import ArchSummary, greedy_continuation, summarize

__all__ = ["ALIASES", "DEFAULT_MODEL", "ArchSummary", "ResolvedModel", "greedy_continuation",
           "load_model", "model_fingerprint", "resolve_model", "summarize"]
