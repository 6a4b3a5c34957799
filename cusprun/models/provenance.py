"""What a model reference names, for people: the model's name, the Hugging Face repo to link (only
one that exists: an embedded model's upstream repo, or a hub id the user gave) and where the
weights came from. Model cards use it, so an expert never links to an invented page."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cusprun.models.embedded import ALIASES

# org/name[@revision], as check_model_reference accepts hub ids (one slash, no path prefix)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?$")


@dataclass(frozen=True)
class BaseModelInfo:
    ref: str
    """The reference as given (alias, hub id[@revision], local path, s3:// prefix, .gguf file)."""
    name: str
    """What to call the model."""
    hub_id: str | None
    """Hugging Face repo id whose page exists, for a link and the card's `base_model` field."""
    source: str
    """Where the weights came from, one clause of markdown."""

    @property
    def url(self) -> str | None:
        return f"https://huggingface.co/{self.hub_id}" if self.hub_id else None

    def markdown(self) -> str:
        """The name, linked when there is a page: `[`name`](url)` or `` `name` ``."""
        return f"[`{self.name}`]({self.url})" if self.url else f"`{self.name}`"


def is_hub_id(ref: str) -> bool:
    """An `org/name[@revision]` that is not a local path here."""
    return bool(_HUB_ID.match(ref)) and not Path(os.path.expanduser(ref)).exists()


def describe_base_model(ref: str) -> BaseModelInfo:
    """Name, link and source of the base-model reference `ref` (see cusprun.models.sources)."""
    ref = ref.strip()
    if ref in ALIASES:
        emb = ALIASES[ref]
        return BaseModelInfo(ref, emb.upstream or ref, emb.upstream or None,
                             f"cusprun's embedded model `{ref}`, {emb.provenance()}")
    if ref.startswith("s3://"):
        return BaseModelInfo(ref, ref, None, "a Hugging Face-layout checkpoint in S3")
    if ref.endswith(".gguf"):
        return BaseModelInfo(ref, ref, None, "dequantised from a local GGUF file")
    if is_hub_id(ref):
        repo, _, revision = ref.partition("@")
        at = f" at revision `{revision}`" if revision else ""
        return BaseModelInfo(ref, repo, repo, f"from the Hugging Face Hub{at}")
    return BaseModelInfo(ref, ref, None, "a local checkpoint")
