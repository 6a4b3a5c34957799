"""The streaming safetensors reader/writer produces files the reference library reads back."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cusprun.errors import CusprunError
from cusprun.models.st_io import OutTensor, read_header, read_tensor, split_shards, write_shard

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int8,
          torch.uint8, torch.bool, torch.float8_e4m3fn]


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for i, dt in enumerate(DTYPES):
        x = torch.randn(6, 5, generator=g) * 10
        out[f"t{i}.{str(dt).split('.')[-1]}"] = x.to(dt) if dt != torch.bool else x > 0
    out["scalar"] = torch.tensor(3.5)
    out["empty"] = torch.zeros(0, 4)
    return out


def test_read_every_dtype_exactly(tmp_path):
    src = tmp_path / "a.safetensors"
    tensors = _tensors()
    save_file(tensors, str(src), metadata={"format": "pt"})
    infos, meta = read_header(src)
    assert meta == {"format": "pt"} and set(infos) == set(tensors)
    for name, t in tensors.items():
        got = read_tensor(infos[name])
        assert got.dtype == t.dtype and got.shape == t.shape
        assert torch.equal(got.reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8)) if t.numel() else True


def test_written_shards_match_index_select(tmp_path):
    src = tmp_path / "a.safetensors"
    tensors = _tensors()
    save_file(tensors, str(src))
    infos, _ = read_header(src)
    idx = torch.tensor([0, 2, 5])
    outs = []
    for name, info in infos.items():
        if len(info.shape) == 2 and info.shape[0] == 6:
            dim = 0 if name < "t4" else 1
            idx_d = idx if dim == 0 else torch.tensor([1, 4])
            shape = list(info.shape)
            shape[dim] = len(idx_d)
            outs.append(OutTensor(name, info, tuple(shape), dim, idx_d))
        else:
            outs.append(OutTensor(name, info, info.shape))
    shards = split_shards(outs, 200)
    assert len(shards) > 2 and [t for s in shards for t in s] == outs
    for i, shard in enumerate(shards):
        path = tmp_path / f"out{i}.safetensors"
        write_shard(path, shard)
        assert (path.read_bytes()[:8] != b"") and int.from_bytes(path.read_bytes()[:8], "little") % 8 == 0
        got = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            assert f.metadata() == {"format": "pt"}
        for t in shard:
            want = tensors[t.name]
            if t.dim is not None:
                want = want.index_select(t.dim, t.index)
            assert got[t.name].dtype == want.dtype and torch.equal(
                got[t.name].reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8))


def test_truncated_input_is_reported(tmp_path):
    src = tmp_path / "a.safetensors"
    save_file({"w": torch.randn(64, 64)}, str(src))
    data = src.read_bytes()
    src.write_bytes(data[:-100])
    with pytest.raises(CusprunError, match="truncated"):
        read_header(src)
    src.write_bytes(b"abc")
    with pytest.raises(CusprunError, match="not a safetensors file"):
        read_header(src)
