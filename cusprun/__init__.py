"""cusprun: prune general LLMs into customized expert models (Cus-Prun, ACL Findings 2025)."""
__version__ = "0.1.0"
