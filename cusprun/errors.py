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
    """The artifact store cannot be reached or holds something unexpected. `transient` is True
    when the cause was a transient failure (worth retrying the whole step later)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
