"""Benchmark ``gasdb split``'s assignment search against the greedy rule it replaced.

Random recording sets (pairs per recording drawn log-normally, median 55, a few recordings 5-10x
larger, as in real captures; 4 scenes; 20-100 % of a recording's pairs with gas), for each size in
``--sizes`` and each ratio set, ``--instances`` sets, one seed each:

* **ours**: :func:`gasdb_tools.splits.assign_groups` (greedy start, local search, branch and bound
  within the default node budget), plain (``video``) and with scene x gas strata (``scene-stratified``);
* **baseline**: the greedy rule (each recording, in a seeded order, to the split furthest below its
  target; stratified: furthest below target within its stratum), the former ``assign_groups``.

Reports, per recording count: the share of sets with every split within 5 points of its ratio,
the mean and largest deviation (points), how often the search proved its result optimal, for
scene-stratified the worst and the mean per-scene deviation and the overall deviation, and the time of both. Run::

    .venv/bin/python benchmarks/bench_splits.py            # 1-3 min on 2 cores

Writes ``benchmarks/results/splits.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gasdb_tools.fsutil import write_json  # noqa: E402
from gasdb_tools.splits import TOLERANCE, _assign, _greedy_assign, parse_ratios  # noqa: E402

SCENES = ("sunny", "rainy", "overcast", "far")


def _instance(rng, n):
    sizes = np.maximum(1, rng.lognormal(4.0, 1.0, n)).astype(int)
    scenes = [SCENES[k] for k in rng.integers(0, len(SCENES), n)]
    gas = np.round(sizes * rng.uniform(0.2, 1.0, n)).astype(int)
    return sizes, scenes, gas


def _deviations(assign, sizes, scenes, gas, ratio):
    """(largest overall deviation, largest per-scene deviation, mean over scenes of each scene's largest
    deviation), as fractions."""
    total = sizes.sum()
    overall = max(abs(sum(sizes[g] for g in range(len(sizes)) if assign[g] == s) / total - r) for s, r in ratio.items())
    scene_tot = Counter()
    for g, sc in enumerate(scenes):
        scene_tot[sc] += sizes[g]
    per_scene = [max(abs(sum(sizes[g] for g in range(len(sizes)) if scenes[g] == sc and assign[g] == s) / n - r)
                     for s, r in ratio.items()) for sc, n in scene_tot.items()]
    return overall, max(per_scene), float(np.mean(per_scene))


def _strata(sizes, scenes, gas):
    return {g: {f"scene={scenes[g]}": int(sizes[g]), "gas": int(gas[g]), "no-gas": int(sizes[g] - gas[g])}
            for g in range(len(sizes))}


def _stratified_greedy(sizes, ratio, strata, seed):
    """The former scene-stratified rule: strata (majority scene, any gas) in a seeded order, then members."""
    rng = np.random.default_rng(seed)
    keys = {g: (next(k for k in strata[g] if k.startswith("scene=")), strata[g]["gas"] > 0) for g in strata}
    kinds = sorted(set(keys.values()))
    order = []
    for kind in (kinds[i] for i in rng.permutation(len(kinds))):
        members = [g for g in sorted(keys) if keys[g] == kind]
        order += [members[i] for i in rng.permutation(len(members))]
    return _greedy_assign({g: int(sizes[g]) for g in strata}, ratio, order, strata=keys)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="6,12,19,30,60", help="recording counts")
    parser.add_argument("--ratios", default="0.8,0.2;0.7,0.1,0.2")
    parser.add_argument("--instances", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = []
    for n in (int(v) for v in args.sizes.split(",")):
        for text in args.ratios.split(";"):
            ratio = parse_ratios(text)
            row = {"recordings": n, "ratios": text, "instances": args.instances}
            acc = {k: [] for k in ("g", "s", "gt", "st", "proven", "sg_scene", "ss_scene", "sg_mean", "ss_mean",
                                   "sg_overall", "ss_overall", "sst", "ss_proven")}
            for seed in range(args.instances):
                sizes, scenes, gas = _instance(rng, n)
                names = {g: int(sizes[g]) for g in range(n)}
                t = time.perf_counter()
                order = [sorted(names)[k] for k in np.random.default_rng(seed).permutation(n)]
                greedy = _greedy_assign(names, ratio, order)
                acc["gt"].append(time.perf_counter() - t)
                t = time.perf_counter()
                ours = _assign(names, ratio, seed=seed)
                acc["st"].append(time.perf_counter() - t)
                acc["g"].append(_deviations(greedy, sizes, scenes, gas, ratio)[0])
                acc["s"].append(_deviations(ours.splits, sizes, scenes, gas, ratio)[0])
                acc["proven"].append(ours.search["proven_optimal"])
                strata = _strata(sizes, scenes, gas)
                sg = _stratified_greedy(sizes, ratio, strata, seed)
                t = time.perf_counter()
                ss = _assign(names, ratio, seed=seed, strata=strata)
                acc["sst"].append(time.perf_counter() - t)
                for key, assign in (("sg", sg), ("ss", ss.splits)):
                    ov, worst, mean = _deviations(assign, sizes, scenes, gas, ratio)
                    acc[f"{key}_overall"].append(ov)
                    acc[f"{key}_scene"].append(worst)
                    acc[f"{key}_mean"].append(mean)
                acc["ss_proven"].append(ss.search["proven_optimal"])
            pts = lambda v: round(100 * float(v), 2)  # noqa: E731
            row.update({
                "greedy_within_5_points": round(float(np.mean(np.array(acc["g"]) <= TOLERANCE + 1e-9)), 3),
                "search_within_5_points": round(float(np.mean(np.array(acc["s"]) <= TOLERANCE + 1e-9)), 3),
                "greedy_mean_points": pts(np.mean(acc["g"])), "greedy_max_points": pts(np.max(acc["g"])),
                "search_mean_points": pts(np.mean(acc["s"])), "search_max_points": pts(np.max(acc["s"])),
                "search_never_worse": bool(all(s <= g + 1e-12 for s, g in zip(acc["s"], acc["g"]))),
                "search_proven_optimal": round(float(np.mean(acc["proven"])), 3),
                "greedy_ms_median": round(1e3 * float(np.median(acc["gt"])), 3),
                "search_ms_median": round(1e3 * float(np.median(acc["st"])), 1),
                "search_ms_max": round(1e3 * float(np.max(acc["st"])), 1),
                "stratified_greedy_worst_scene_points_mean": pts(np.mean(acc["sg_scene"])),
                "stratified_search_worst_scene_points_mean": pts(np.mean(acc["ss_scene"])),
                "stratified_greedy_mean_scene_points": pts(np.mean(acc["sg_mean"])),
                "stratified_search_mean_scene_points": pts(np.mean(acc["ss_mean"])),
                "stratified_greedy_overall_max_points": pts(np.max(acc["sg_overall"])),
                "stratified_search_overall_max_points": pts(np.max(acc["ss_overall"])),
                "stratified_search_proven_optimal": round(float(np.mean(acc["ss_proven"])), 3),
                "stratified_search_ms_median": round(1e3 * float(np.median(acc["sst"])), 1),
                "stratified_search_ms_max": round(1e3 * float(np.max(acc["sst"])), 1),
            })
            results.append(row)
            print(f"{n:>3} recs {text:<12} within 5 pts: greedy {row['greedy_within_5_points']:.0%} search "
                  f"{row['search_within_5_points']:.0%}; max pts greedy {row['greedy_max_points']:.1f} search "
                  f"{row['search_max_points']:.1f}; proven {row['search_proven_optimal']:.0%}; ms median "
                  f"{row['search_ms_median']} max {row['search_ms_max']} (greedy {row['greedy_ms_median']}); "
                  f"stratified: worst scene pts {row['stratified_greedy_worst_scene_points_mean']:.1f} -> "
                  f"{row['stratified_search_worst_scene_points_mean']:.1f}, mean scene pts "
                  f"{row['stratified_greedy_mean_scene_points']:.1f} -> "
                  f"{row['stratified_search_mean_scene_points']:.1f}, overall max pts "
                  f"{row['stratified_greedy_overall_max_points']:.1f} -> "
                  f"{row['stratified_search_overall_max_points']:.1f}; ms max {row['stratified_search_ms_max']}",
                  flush=True)
    write_json(ROOT / "benchmarks" / "results" / "splits.json", {
        "benchmark": "splits",
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "instances": args.instances,
        "rows": results,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
