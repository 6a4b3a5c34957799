"""SpecModel: a pydantic config whose validation errors become one SpecError that names each
bad field, the value given and what is accepted (every config a user writes derives from it)."""
from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ValidationError, model_validator

from cusprun.errors import SpecError


def spec_error_from(e: ValidationError, what: str, allowed: dict[str, str] | None = None) -> SpecError:
    """A SpecError naming each bad field, its value and what is accepted."""
    lines = []
    for err in e.errors():
        field = ".".join(map(str, err["loc"])) or what
        hint = (allowed or {}).get(field)
        lines.append(f"{field}={err.get('input')!r}: {err['msg']}" + (f"; allowed: {hint}" if hint else ""))
    return SpecError(f"Invalid {what}: " + " | ".join(lines))


class SpecModel(BaseModel):
    """A config whose validation errors become one SpecError naming `spec_name`; `allowed`
    describes the accepted values per field."""

    spec_name: ClassVar[str] = "config"
    allowed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _as_spec_error(cls, data, handler):
        try:
            return handler(data)
        except ValidationError as e:
            raise spec_error_from(e, cls.spec_name, cls.allowed) from e
