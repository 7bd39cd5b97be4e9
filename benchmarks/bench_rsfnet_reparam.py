"""RSFNet's structural re-parameterisation: training form vs deploy form, in one run.

For ``rsfnet-50-18`` (and ``rsfnet-101-34`` with ``--all``): parameters, GFLOPs / GMACs
(``FlopCounterMode``, 2 FLOPs per MAC, conv + matmul only) at the protocol's 1×4×512×640 and at
MFNet's 1×4×480×640 with 9 classes (the paper's setting: 44.53 M parameters, 64.69 "GFLOPs", which
thop counts as MACs), and CPU latency of the training form against the deploy form built from it
by ``switch_to_deploy()`` (same weights; the two outputs are compared). Timing alternates the two
forms round by round (batch 1, fp32, eval + inference_mode, one warm-up forward each; 1×4×256×320
and one torch thread by default, so many rounds fit), so a change of machine load hits both. Each
forward records its **CPU time** (``time.process_time``: the work this process did, little
affected by other processes on a shared machine) and its **wall time** (``perf_counter``).
Reported: median and best CPU time per form and their ratio; best wall time and the median of
the paired (same-round) wall-time ratios. Run::

    .venv/bin/python benchmarks/bench_rsfnet_reparam.py --all        # ~5 min on a quiet 2-core CPU
    .venv/bin/python benchmarks/bench_rsfnet_reparam.py --size 512x640 --threads 2 --rounds 3

Writes ``benchmarks/results/rsfnet_reparam.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gasdb_tools.fsutil import write_json  # noqa: E402

PAPER = {"rsfnet-50-18": {"params_M": 44.53, "gflops_thop": 64.69}, "rsfnet-101-34": {"params_M": 73.63}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also rsfnet-101-34")
    parser.add_argument("--rounds", type=int, default=9, help="alternating timing rounds per form")
    parser.add_argument("--iters", type=int, default=3, help="timed forwards per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", default="256x320", help="HEIGHTxWIDTH of the timed input")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rsfnet_reparam.json")
    args = parser.parse_args(argv)
    import torch

    from gasdb_tools.bench.registry import count_parameters, create_model
    from gasdb_tools.bench.speed import count_flops, environment

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    names = ["rsfnet-50-18"] + (["rsfnet-101-34"] if args.all else [])
    results = {}
    for name in names:
        row = {}
        for form, deploy in (("train", False), ("deploy", True)):
            f512 = count_flops(name, (1, 4, 512, 640), deploy=deploy)
            f480 = count_flops(name, (1, 4, 480, 640), deploy=deploy, n_class=9)
            row[form] = {"params_2cls": count_parameters(name, deploy=deploy),
                         "params_9cls": count_parameters(name, n_class=9, deploy=deploy),
                         "gflops_512x640": f512 / 1e9, "gmacs_512x640": f512 / 2e9,
                         "gflops_480x640_9cls": f480 / 1e9, "gmacs_480x640_9cls": f480 / 2e9}
        torch.manual_seed(0)
        model = create_model(name).eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # mild non-trivial BN statistics (the fusion must fold them; activations stay sane)
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(0.2 * torch.rand(m.num_features, generator=g) - 0.1)
                    m.running_var.copy_(0.2 * torch.rand(m.num_features, generator=g) + 0.9)
        deployed = copy.deepcopy(model).switch_to_deploy()
        x = torch.rand(1, 4, h, w, generator=g)
        with torch.inference_mode():
            y = model(x)
            diff = float((y - deployed(x)).abs().max())
            scale = float(y.abs().max())
        runs = {"train": [], "deploy": []}
        cpu = {"train": [], "deploy": []}
        with torch.inference_mode():
            for net in (model, deployed):  # warm-up
                net(x)
            for _ in range(args.rounds):
                for form, net in (("train", model), ("deploy", deployed)):
                    for _ in range(args.iters):
                        w0, c0 = time.perf_counter(), time.process_time()
                        net(x)
                        cpu[form].append((time.process_time() - c0) * 1e3)
                        runs[form].append((time.perf_counter() - w0) * 1e3)
        for form in runs:
            row[form]["wall_ms"] = runs[form]
            row[form]["cpu_ms"] = cpu[form]
            row[form]["wall_best_ms"] = min(runs[form])
            row[form]["wall_median_ms"] = statistics.median(runs[form])
            row[form]["cpu_median_ms"] = statistics.median(cpu[form])
            row[form]["cpu_best_ms"] = min(cpu[form])
        per_pair = [t / d for t, d in zip(runs["train"], runs["deploy"])]
        row["deploy_vs_train"] = {
            "params_ratio": row["deploy"]["params_2cls"] / row["train"]["params_2cls"],
            "gflops_ratio": row["deploy"]["gflops_512x640"] / row["train"]["gflops_512x640"],
            "cpu_time_speedup_median": row["train"]["cpu_median_ms"] / row["deploy"]["cpu_median_ms"],
            "cpu_time_speedup_best": row["train"]["cpu_best_ms"] / row["deploy"]["cpu_best_ms"],
            "wall_speedup_best": row["train"]["wall_best_ms"] / row["deploy"]["wall_best_ms"],
            "wall_speedup_paired_median": statistics.median(per_pair),
            "max_abs_output_difference": diff, "max_abs_output": scale}
        row["paper"] = PAPER[name]
        results[name] = row
        del model, deployed
    out = {"benchmark": "rsfnet_reparam", "timed_input": [1, 4, h, w], "rounds": args.rounds,
           "iters_per_round": args.iters, "results": results, "env": environment("cpu"),
           "load_avg_1min": round(os.getloadavg()[0], 2), "python": platform.python_version()}
    write_json(args.out, out)
    for name, row in results.items():
        t, d, r = row["train"], row["deploy"], row["deploy_vs_train"]
        print(f"{name}: params (2 cls) {t['params_2cls']:,} -> {d['params_2cls']:,}; 9 cls deploy "
              f"{d['params_9cls'] / 1e6:.2f} M (paper {row['paper']['params_M']} M)")
        print(f"  GFLOPs @512x640 {t['gflops_512x640']:.2f} -> {d['gflops_512x640']:.2f}; GMACs @480x640, 9 cls "
              f"{t['gmacs_480x640_9cls']:.2f} -> {d['gmacs_480x640_9cls']:.2f}")
        n = args.rounds * args.iters
        print(f"  CPU time per forward @{h}x{w}, {args.threads} thread(s), median of {n}: {t['cpu_median_ms']:.0f} ms "
              f"-> {d['cpu_median_ms']:.0f} ms ({r['cpu_time_speedup_median']:.3f}x; best {t['cpu_best_ms']:.0f} -> "
              f"{d['cpu_best_ms']:.0f} ms, {r['cpu_time_speedup_best']:.3f}x)")
        print(f"  wall latency, best of {n}: {t['wall_best_ms']:.0f} ms -> {d['wall_best_ms']:.0f} ms "
              f"({r['wall_speedup_best']:.3f}x; paired median {r['wall_speedup_paired_median']:.3f}x)")
        print(f"  max |output difference| {r['max_abs_output_difference']:.2e} (outputs up to {r['max_abs_output']:.2f})")
    print(f"load average {out['load_avg_1min']}; wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
