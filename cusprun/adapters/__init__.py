"""Architecture adapters: per-family module paths and shapes, read from one table."""
from cusprun.adapters.adapter import Adapter, Dims, RowPart, architecture_of, count_params, zero_units
from cusprun.adapters.table import ARCHITECTURES, ArchSpec

__all__ = ["ARCHITECTURES", "Adapter", "ArchSpec", "Dims", "RowPart", "architecture_of",
           "count_params", "zero_units"]
