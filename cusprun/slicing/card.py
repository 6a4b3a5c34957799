"""Model card (README.md with YAML front matter) of a sliced expert."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from cusprun.plans.plan import PruningPlan
from cusprun.models.provenance import BaseModelInfo, describe_base_model


def _fmt(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


_COMPENSATION = {
    "bias": "the mean contribution of the removed units was added to the output biases of "
            "down_proj and o_proj (FLAP's bias compensation)",
    "ls": "the kept columns of down_proj and o_proj were refit by ridge least squares to "
          "reconstruct the dense layer outputs on calibration tokens",
    "ls+bias": "the kept columns of down_proj and o_proj and their output biases were refit by "
               "ridge least squares to reconstruct the dense layer outputs on calibration tokens",
}


def _healing_line(healing: dict) -> str:
    s = healing.get("settings", {})
    return (f"**Then healed**: the pruned model was trained for {healing.get('tokens', 0):,} tokens "
            f"to match the base model's next-token distribution (distillation: KL weight "
            f"{s.get('kl_weight')}, LM weight {s.get('lm_weight')}, temperature "
            f"{s.get('temperature')}, training `{s.get('train')}`) on the training side of its "
            f"calibration corpora and general text, in {healing.get('wall_s')} s on "
            f"{healing.get('device_name') or healing.get('device')}; `healing.json` holds the "
            "settings and the loss curve. The tensors and shapes are those of the pruned model.")


def _weights_line(compensation: dict | None, healing: dict | None = None) -> str:
    if healing:
        return _weights_line(compensation).split(" **No post-training**")[0] + " " + _healing_line(healing)
    mode = (compensation or {}).get("mode", "none")
    if mode == "none":
        return ("Whole FFN neurons and attention heads were removed and the remaining weights were "
                "copied unchanged. **No post-training** (no fine-tuning, distillation or weight "
                "update of any kind) was applied.")
    tokens = (compensation or {}).get("calibration_tokens")
    on = f" ({tokens:,} tokens)" if tokens else ""
    return (f"Whole FFN neurons and attention heads were removed; then {_COMPENSATION[mode]}{on}, "
            f"a closed-form correction (compensation mode `{mode}`, ridge "
            f"{(compensation or {}).get('ridge')}). **No post-training** (no gradient step, "
            "fine-tuning or distillation) was applied; every other weight is copied unchanged.")


def front_matter(plan: PruningPlan, base: BaseModelInfo, params: dict, card: dict,
                 compensation: dict | None = None, healing: dict | None = None) -> dict:
    tags = ["cusprun", "pruned", "structured-pruning", plan.method, *sorted(plan.dimensions)]
    tags += ["healed"] if healing else []
    tags += [t for t in card.get("tags", []) if t not in tags]
    # The Hub reads `base_model` as a repo id: only set when there is one (a local path is not).
    meta: dict = {**({"base_model": base.hub_id} if base.hub_id else {}),
                  "library_name": "transformers", "pipeline_tag": "text-generation", "tags": tags}
    for key in ("license", "language", "datasets"):
        if card.get(key):
            meta[key] = card[key]
    meta["cusprun"] = {
        "base_model_ref": base.ref, "method": plan.method, "rule": plan.rule, "layout": plan.layout,
        "target_ratio": plan.target_ratio, "achieved_ratio": round(plan.achieved_ratio, 6),
        "params_total": params["pruned"]["total"],
        "params_non_embedding": params["pruned"]["non_embedding"],
        "base_params_total": params["dense"]["total"],
        "base_params_non_embedding": params["dense"]["non_embedding"],
        "compensation": (compensation or {}).get("mode", "none"),
    }
    if healing:
        meta["cusprun"]["healed_tokens"] = healing.get("tokens")
    return meta


def _dimension_lines(plan: PruningPlan) -> list[str]:
    lines = []
    for dim, info in sorted(plan.dimensions.items()):
        value = info.get("value", "?")
        hashes = info.get("corpus_hashes") or []
        shown = f" (calibration corpus {', '.join(f'`{h}`' for h in hashes)})" if hashes else ""
        lines.append(f"- **{dim}**: {value}{shown}")
    return lines


def model_card(plan: PruningPlan, *, base_model: str, params: dict, widths: list[dict],
               card: dict | None = None, version: str, compensation: dict | None = None,
               healing: dict | None = None) -> str:
    """README.md text: YAML metadata, then how the model was made and how to load it."""
    card = card or {}
    base = describe_base_model(base_model)
    meta = front_matter(plan, base, params, card, compensation, healing)
    title = card.get("expert") or card.get("name") or f"{base.name} pruned with Cus-Prun"
    d, p = params["dense"], params["pruned"]
    w0 = widths[0]
    lines = [f"# {title}", ""]
    if card.get("description"):
        lines += [card["description"], ""]
    rule = f", rule `{plan.rule}`" if plan.rule else ""
    lines += [
        f"This model was made from {base.markdown()} ({base.source}) by structured pruning with "
        f"cusprun {version} (method `{plan.method}`{rule}; Cus-Prun: https://arxiv.org/abs/2506.02561). "
        + _weights_line(compensation, healing),
        "",
        f"- Pruned {_pct(plan.achieved_ratio)} of the prunable (FFN + attention projection) parameters "
        f"(target {_pct(plan.target_ratio)}).",
        f"- Parameters: {_fmt(p['total'])} total / {_fmt(p['non_embedding'])} non-embedding "
        f"(base model: {_fmt(d['total'])} / {_fmt(d['non_embedding'])}).",
        "- Embeddings, norms and the LM head are unchanged.",
    ]
    dims = _dimension_lines(plan)
    if dims:
        lines += ["", "Dimensions the expert was customised for:", "", *dims]
    lines += ["", "## Loading", ""]
    if plan.layout == "uniform":
        lines += [
            f"Every layer keeps {w0['intermediate_size']} FFN neurons, {w0['num_attention_heads']} query "
            f"heads and {w0['num_key_value_heads']} key/value heads, so `config.json` is a stock "
            "config of the base family (with an explicit `head_dim`) and the model loads with plain "
            "transformers:",
            "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("PATH")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH")', "```", "",
            "Note: transformers 5 rejects, for some families (e.g. Llama, Gemma3), a config whose hidden "
            "size is not a multiple of the number of attention heads even with an explicit `head_dim`; "
            "uniform experts therefore keep a head count the base family accepts.",
        ]
    else:
        lines += [
            "Layers keep different widths (`layer_widths` in `config.json`, model type "
            "`cusprun_per_layer`). `import cusprun.slicing` (or using `cusprun.load_expert`) "
            "registers this model type with transformers' Auto classes (no remote code):",
            "", "```python", "import cusprun", 'model, tokenizer = cusprun.load_expert("PATH")',
            "# or: transformers.AutoModelForCausalLM.from_pretrained(\"PATH\") after `import cusprun.slicing`",
            "```", "",
            "| layer | FFN neurons | query heads | KV heads |", "|---:|---:|---:|---:|",
            *[f"| {i} | {w['intermediate_size']} | {w['num_attention_heads']} | "
              f"{w['num_key_value_heads']} |" for i, w in enumerate(widths)],
        ]
    lines += ["", "`cusprun.json` holds the full pruning plan (kept unit indices of every layer).", ""]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + "\n".join(lines)


def rewrite_card(model_dir: Path, card: dict) -> None:
    """Give a sliced checkpoint the card of the expert it is published as: README.md and the
    base model named in cusprun.json, made from the plan, counts and widths cusprun.json holds.
    A slice is shared by every build with the same plan (its key is the weights'), so the card
    belongs to the publication. Files are replaced, never written through: they may be hard
    links into the stored slice."""
    meta = json.loads((model_dir / "cusprun.json").read_text())
    plan = PruningPlan.model_validate({k: v for k, v in meta.items() if k in PruningPlan.model_fields})
    base_model = card.get("base_model") or meta.get("base_model")
    meta["base_model"] = base_model
    text = model_card(plan, base_model=base_model, params=meta["params"], widths=meta["layer_widths"],
                      card=card, version=meta.get("cusprun_version", "?"),
                      compensation=meta.get("compensation"), healing=meta.get("healing"))
    for name, data in (("README.md", text), ("cusprun.json", json.dumps(meta, indent=2) + "\n")):
        (model_dir / name).unlink(missing_ok=True)
        (model_dir / name).write_text(data)
