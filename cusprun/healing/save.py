"""The healed checkpoint: the sliced checkpoint's files with its weights replaced, tensor by
tensor and shard by shard (same names, shapes, dtypes, config, tokenizer), so whatever loaded
the sliced expert loads the healed one; healing.json (settings, cost, loss curve) beside it."""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import torch

HEALING_FILE = "healing.json"


def write_healed(state: Mapping[str, torch.Tensor], sliced_dir: str | Path, out_dir: str | Path,
                 healing: dict) -> Path:
    """Write `state` (the trained model's state dict) in the layout of `sliced_dir` to
    `out_dir`; a tensor of the checkpoint missing from `state`, or of another shape, is an
    error (nothing is silently kept from before healing)."""
    from cusprun.models.checkpoint import checkpoint_tensors
    from cusprun.models.st_io import OutTensor, write_shard

    src, out = Path(sliced_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: dict[Path, list] = defaultdict(list)
    for name, info in checkpoint_tensors(src).items():
        if name not in state:
            raise ValueError(f"healed model has no tensor {name!r} of {src}")
        t = state[name]
        if tuple(t.shape) != tuple(info.shape):
            raise ValueError(f"healed {name}: shape {tuple(t.shape)}, checkpoint {tuple(info.shape)}")
        shards[info.file].append(OutTensor(name, info, tuple(info.shape),
                                           make=lambda t=t: t.detach().cpu()))
    for f, tensors in shards.items():
        write_shard(out / f.name, tensors)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "DONE.json":
            shutil.copyfile(f, out / f.name)
    meta_path = out / "cusprun.json"
    if meta_path.exists():       # the card's facts: the weights are the healed ones
        meta = json.loads(meta_path.read_text())
        meta["healing"] = {k: v for k, v in healing.items() if k != "curve"}
        meta_path.write_text(json.dumps(meta, indent=2))
        if (out / "README.md").exists():     # the card says how the weights were made
            from cusprun.slicing.card import rewrite_card

            rewrite_card(out, {})
    (out / HEALING_FILE).write_text(json.dumps(healing, indent=1))
    return out
