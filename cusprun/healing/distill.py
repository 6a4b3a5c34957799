"""The healing loop: the sliced model trained to match the dense model's next-token
distribution (top-k KL from the teacher cache, optionally plus the LM loss) on packed blocks of
calibration and general text, for the spec's token budget, with AdamW under a warm-up + cosine
schedule. bf16 autocast on CUDA, float32 on a CPU."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from cusprun.healing.config import HealSpec
from cusprun.healing.data import Blocks, pack, schedule
from cusprun.healing.loss import lm_loss, topk_kl
from cusprun.healing.teacher import TeacherCache, build_cache

PROBE_BLOCKS = 8
"""Blocks on which the KL to the teacher is measured before and after healing."""


def _trainable(model, spec: HealSpec) -> list[torch.nn.Parameter]:
    """Freeze what the spec does not train; the parameters the optimizer updates."""
    from cusprun.adapters import Adapter
    from cusprun.healing.lora import add_lora

    layers = torch.nn.ModuleList(Adapter.for_model(model).layers(model))  # a view, not a copy
    if spec.train == "all":
        return [p for p in model.parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(False)
    if spec.train == "lora":
        return add_lora(layers, spec.lora_rank)
    for p in layers.parameters():
        p.requires_grad_(True)
    return list(layers.parameters())


def lr_at(step: int, steps: int, spec: HealSpec) -> float:
    """Learning-rate factor: linear warm-up, then cosine from 1 down to lr_floor."""
    warm = int(spec.warmup * steps)
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(steps - warm, 1)
    return spec.lr_floor + (1 - spec.lr_floor) * 0.5 * (1 + math.cos(math.pi * t))


def _loss(model, ids, cache: TeacherCache | None, rows: Sequence[int], spec: HealSpec,
          device: str) -> tuple[torch.Tensor, float, float]:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        logits = model(input_ids=ids).logits
    kl = lm = torch.zeros((), device=ids.device)
    if spec.kl_weight and cache is not None:
        t_ids, t_logp = cache.get(rows, ids.device)
        kl = topk_kl(logits, t_ids, t_logp, spec.temperature)
    if spec.lm_weight:
        lm = lm_loss(logits, ids)
    return spec.kl_weight * kl + spec.lm_weight * lm, float(kl.detach()), float(lm.detach())


@torch.no_grad()
def probe_kl(model, blocks: Blocks, cache: TeacherCache, rows: Sequence[int], spec: HealSpec,
             device: str) -> float:
    """Mean top-k KL to the teacher (at the spec's temperature) on `rows`, in eval mode."""
    was = model.training
    model.eval()
    total = 0.0
    for r in rows:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(input_ids=blocks.ids[[r]].to(device)).logits
        t_ids, t_logp = cache.get([r], device)
        total += float(topk_kl(logits, t_ids, t_logp, spec.temperature))
    model.train(was)
    return total / max(len(rows), 1)


def _peak_memory(device: str) -> dict:
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    out = {"peak_rss_bytes": int(rss)}
    if device == "cuda":
        out["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def heal(student_dir: str | Path, teacher_dir: str | Path, texts: Mapping[str, Sequence[str]],
         spec: HealSpec, out_dir: str | Path, *, device: str = "cpu",
         progress: bool = True, on_step=None) -> dict:
    """Heal the checkpoint at `student_dir` (a sliced expert) from the dense checkpoint at
    `teacher_dir` on `texts` (group -> documents: the expert's dimensions and 'general'),
    write the healed checkpoint to `out_dir` and return its healing record (settings, tokens,
    wall time, device, KL to the teacher before and after, loss curve)."""
    import cusprun.slicing  # noqa: F401  (registers per-layer experts with AutoModelForCausalLM)
    from tqdm.auto import tqdm

    from cusprun.healing.lora import merge_lora
    from cusprun.healing.save import write_healed
    from cusprun.models.loading import load_model, load_tokenizer

    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)
    tok = load_tokenizer(student_dir)
    blocks = pack(tok, texts, spec.seq_len)
    plan = schedule(blocks, steps=spec.steps, batch_size=spec.batch_size,
                    general_share=spec.general_share, seed=spec.seed)
    used = sorted({b for step in plan for b in step})
    probe = used[:PROBE_BLOCKS]
    # the teacher's weights: bf16 on CUDA, float32 on a CPU (cusprun.models.loading.default_dtype)
    wdtype = torch.bfloat16 if device == "cuda" else torch.float32
    cache = build_cache(teacher_dir, blocks.ids, used, k=spec.top_k, temperature=spec.temperature,
                        device=device, dtype=wdtype, batch=spec.micro, progress=progress)
    t_teacher = time.perf_counter() - t0
    # trained weights stay float32 (bf16 autocast on CUDA); LoRA's frozen base may be bf16
    sdtype = torch.bfloat16 if (device == "cuda" and spec.train == "lora") else torch.float32
    model, _ = load_model(student_dir, dtype=sdtype, device=device)
    params = _trainable(model, spec)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    kl_before = probe_kl(model, blocks, cache, probe, spec, device)
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay,
                            betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, spec.steps, spec))
    model.train()
    curve, seen, running = [], 0, None
    accum = spec.batch_size // spec.micro
    t_train = time.perf_counter()
    bar = tqdm(total=spec.steps * spec.batch_size * spec.seq_len, desc="heal", unit="tok",
               disable=not progress)
    try:
        for step, rows in enumerate(plan):
            loss_sum = kl_sum = lm_sum = 0.0
            for m in range(0, len(rows), spec.micro):
                part = rows[m:m + spec.micro]
                loss, kl, lm = _loss(model, blocks.ids[part].to(device), cache, part, spec, device)
                (loss / accum).backward()
                loss_sum, kl_sum, lm_sum = loss_sum + float(loss.detach()), kl_sum + kl, lm_sum + lm
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            seen += len(rows) * spec.seq_len
            loss_v = loss_sum / accum
            running = loss_v if running is None else 0.9 * running + 0.1 * loss_v
            elapsed = time.perf_counter() - t_train
            curve.append({"step": step + 1, "tokens": seen, "loss": loss_v,
                          "kl": kl_sum / accum, "lm": lm_sum / accum,
                          "lr": lr, "seconds": round(elapsed, 2)})
            bar.update(len(rows) * spec.seq_len)
            bar.set_postfix(loss=f"{running:.4g}", tok_s=f"{seen / max(elapsed, 1e-9):.0f}")
            if on_step is not None:
                on_step(step + 1, spec.steps)
    finally:
        bar.close()
    train_s = time.perf_counter() - t_train
    if spec.train == "lora":
        merge_lora(model)
    kl_after = probe_kl(model, blocks, cache, probe, spec, device)
    record = {
        "settings": spec.key_settings(), "tokens": seen, "steps": spec.steps,
        "unique_blocks": len(used), "available_blocks": len(blocks.group),
        "groups": {g: len(blocks.of(g)) for g in dict.fromkeys(blocks.group)},
        "device": device, "device_name": _device_name(device),
        "trainable_params": sum(p.numel() for p in params),
        "teacher_cache_bytes": cache.nbytes, "teacher_s": round(t_teacher, 2),
        "train_s": round(train_s, 2), "wall_s": round(time.perf_counter() - t0, 2),
        "tokens_per_s": round(seen / max(train_s, 1e-9), 1),
        "kl_before": kl_before, "kl_after": kl_after,
        **_peak_memory(device), "curve": curve}
    state = {n: p for n, p in model.state_dict().items()}
    write_healed(state, student_dir, out_dir, record)
    return record


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
