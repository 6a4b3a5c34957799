"""Language specificity: does each language's expert keep its own language better than the
other language's expert keeps it? A cross table from two recorded builds' reports (same base
model; each report evaluates its expert on both languages' held-out Bible verses: its own
language set and the other as `other_languages`).

    python -m benchmarks run language_cross fr-health-qa es-history-qa

Each cell: the expert's held-out loss retention (dense loss / expert loss) on that language's
set; then, per set, the paired difference of the two experts' losses on the same documents with
its paired 95 % interval. Reads benchmarks/results/<expert>/report.json, writes
benchmarks/results/language_cross.json (rendered into docs/results.md by `make results`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.results_io import RESULTS, Result


def _rows(report: dict) -> dict[tuple[str, str], dict]:
    """(model, eval set) -> loss row of a report.json."""
    return {(r["model"], r["eval_set"]): r for r in report["rows"] if r["metric"] == "loss"}


def _expert(report: dict) -> str:
    names = [n for n, e in report["models"].items() if e["method"] == "cusprun"]
    if len(names) != 1:
        raise SystemExit(f"expected one Cus-Prun expert in the report, found {names}")
    return names[0]


def cross_table(reports: dict[str, dict]) -> tuple[list[list[str]], list[list[str]], dict]:
    """(retention rows, paired-difference rows, raw values) for experts named by their reports."""
    from cusprun.evaluation.intervals import paired_difference, samples_of

    rows = {name: _rows(r) for name, r in reports.items()}
    experts = {name: _expert(r) for name, r in reports.items()}
    sets = sorted(set.intersection(*({s for (m, s) in rows[n] if s.startswith("language=")}
                                     for n in reports)))
    retention, raw = [], {"retention": {}, "difference": {}}
    for name in reports:
        cells = []
        for s in sets:
            e, d = rows[name][(experts[name], s)], rows[name][("dense", s)]
            v = d["value"] / e["value"]
            raw["retention"][f"{name}|{s}"] = v
            cells.append(f"{v:.3f}")
        retention.append([name, *cells])
    a, b = list(reports)
    diffs = []
    for s in sets:
        ra, rb = rows[a][(experts[a], s)], rows[b][(experts[b], s)]
        if ra["unit_den"] != rb["unit_den"]:
            raise SystemExit(f"{s}: the two reports scored different documents; rebuild both "
                             "with the same evaluation settings")
        dif = paired_difference(samples_of(ra["unit_num"], ra["unit_den"]),
                                samples_of(rb["unit_num"], rb["unit_den"]))
        raw["difference"][s] = {"diff": dif.value, "low": dif.low, "high": dif.high}
        verdict = (f"{a} better" if dif.high < 0 else f"{b} better" if dif.low > 0 else "within noise")
        diffs.append([s, f"{dif.value:+.3f} [{dif.low:+.3f}, {dif.high:+.3f}]", verdict])
    return [["expert", *sets]] + retention, [["set", f"loss {a} - loss {b}", "verdict"]] + diffs, raw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experts", nargs=2, help="two expert folders under benchmarks/results/")
    p.add_argument("--results", default=str(RESULTS), help="where the expert folders are")
    args = p.parse_args(argv)
    reports = {n: json.loads((Path(args.results) / n / "report.json").read_text())
               for n in args.experts}
    ret, dif, raw = cross_table(reports)
    res = Result("language_cross", "Language specificity: each expert on both languages' "
                 "held-out Bible verses", {"experts": args.experts})
    res.table(ret[0], ret[1:], title="Held-out loss retention (dense loss / expert loss):")
    res.table(dif[0], dif[1:], title="Paired difference of the two experts' losses (nats/token), "
                                     "paired 95 % interval:", align=["l", "r", "l"])
    res.values = raw
    res.headline = "; ".join(f"{r[0]}: {r[2]}" for r in dif[1:])
    res.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
