"""Errors users see. Each names the bad value and what would be accepted."""


class CusprunError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ModelSourceError(CusprunError):
    """A model reference could not be resolved."""


class UnsupportedArchitectureError(CusprunError):
    """The model's architecture is not in the adapter table."""


class SpecError(CusprunError):
    """An invalid specification (ratio, rule, layout, dimension...)."""


class CorpusError(CusprunError):
    """A calibration or evaluation corpus is missing, empty or malformed."""


class StorageError(CusprunError):
    """The artifact store cannot be reached or holds something unexpected."""
