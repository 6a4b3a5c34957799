"""Shared vs expert-specific units, layer by layer: the paper's analysis of which neurons several
language experts of one base model keep in common and which only one of them keeps.

Input: each expert's kept FFN neurons (and query heads) per layer, read from its `cusprun.json`
(the whole pruning plan). Per layer, every unit that at least one expert keeps is counted once,
as kept by all experts (shared), by some of them, or by exactly one (specific to that expert);
the pairwise Jaccard index of the kept sets is reported too."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path

from cusprun.evaluation.config import EvaluationError

KINDS = ("ffn", "heads")


def kept_from_plan(plan: Mapping) -> dict[str, list[set[int]]]:
    """{'ffn': [kept neuron ids per layer], 'heads': [kept query heads per layer]} of a plan dict
    (cusprun.json or a PruningPlan dump)."""
    layers = plan.get("layers")
    if not isinstance(layers, list) or not layers:
        raise EvaluationError("Not a pruning plan: no 'layers' list with kept units per layer.")
    return {k: [set(layer.get(k, [])) for layer in layers] for k in KINDS}


def read_expert_plan(where: str | Path, storage_options: dict | None = None) -> dict:
    """cusprun.json of an expert: a local directory or file, or an s3:// expert prefix."""
    where = str(where)
    path = where if where.endswith(".json") else where.rstrip("/") + "/cusprun.json"
    try:
        if where.startswith("s3://"):
            import fsspec

            with fsspec.open(path, "r", **(storage_options or {})) as f:
                return json.load(f)
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EvaluationError(f"No cusprun.json at {path!r}; give an expert directory (a sliced "
                              "or published expert), its cusprun.json, or an s3:// expert prefix.") from None
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{path!r} is not valid JSON: {e}") from e


def expert_name(plan: Mapping, fallback: str) -> str:
    """The expert's language if it has one (what this analysis compares), else fallback."""
    lang = (plan.get("dimensions") or {}).get("language", {})
    return str(lang.get("value")) if isinstance(lang, dict) and lang.get("value") else fallback


def layer_overlap(kept: Mapping[str, Sequence[set[int]]]) -> list[dict]:
    """Per layer: units kept by any expert, fractions of those kept by all / some / one expert
    (per expert), and pairwise Jaccard indices. `kept`: expert -> kept unit ids per layer."""
    names = list(kept)
    if len(names) < 2:
        raise EvaluationError(f"Layer overlap needs at least two experts; got {names}.")
    depth = {len(v) for v in kept.values()}
    if len(depth) != 1:
        raise EvaluationError(f"Experts have different layer counts {sorted(depth)}: they must "
                              "be cut from the same base model.")
    rows = []
    for layer in range(depth.pop()):
        sets = {n: set(kept[n][layer]) for n in names}
        union = set().union(*sets.values())
        counts: dict[int, int] = {}
        for s in sets.values():
            for u in s:
                counts[u] = counts.get(u, 0) + 1
        total = max(len(union), 1)
        specific = {n: sum(1 for u in s if counts[u] == 1) / total for n, s in sets.items()}
        shared = sum(1 for c in counts.values() if c == len(names)) / total
        pairs = {f"{a}|{b}": (len(sets[a] & sets[b]) / len(sets[a] | sets[b]))
                 if sets[a] | sets[b] else 1.0 for a, b in combinations(names, 2)}
        rows.append({"layer": layer, "kept_by_any": len(union), "shared_by_all": shared,
                     "shared_by_some": 1.0 - shared - sum(specific.values()),
                     "specific": specific, "jaccard": pairs,
                     "mean_jaccard": sum(pairs.values()) / len(pairs)})
    return rows


def overlap_markdown(rows_by_kind: Mapping[str, list[dict]], names: Sequence[str],
                     image: Path | None = None) -> str:
    """A per-layer table (FFN neurons; heads summarised) and the plot, for report.md-style files."""
    out = ["# Shared and expert-specific units per layer", "",
           f"Experts: {', '.join(f'`{n}`' for n in names)}. Of the units that at least one expert "
           "keeps in a layer: the share every expert keeps (shared), the share only one expert "
           "keeps (specific to it), the rest kept by some; and the mean pairwise Jaccard index of "
           "the kept sets.", ""]
    for kind, rows in rows_by_kind.items():
        label = "FFN neurons" if kind == "ffn" else "query heads"
        out += [f"## {label}", "",
                "| layer | kept by any | shared by all | by some | "
                + " | ".join(f"only {n}" for n in names) + " | mean Jaccard |",
                "|---:|---:|---:|---:|" + "---:|" * len(names) + "---:|"]
        for r in rows:
            out.append(f"| {r['layer']} | {r['kept_by_any']} | {100 * r['shared_by_all']:.1f}% | "
                       f"{100 * r['shared_by_some']:.1f}% | "
                       + " | ".join(f"{100 * r['specific'][n]:.1f}%" for n in names)
                       + f" | {r['mean_jaccard']:.3f} |")
        out.append("")
    if image is not None:
        out += [f"![Shared and expert-specific units per layer]({image.name})", ""]
    return "\n".join(out)
