"""Sensor-only gas identification on the real MultimodalGasData sensor CSVs: the 1D-CNN against
scikit-learn baselines trained on the same split, in the same run.

The v3 train / validation / test CSVs (``../shared/data/multimodalgas``, or ``--data``) become an
identification release (:func:`gasdb_tools.bench.gasid.build_id_release`, sensors only: the
thermal images are not available there). Then, on that release's split:

* **ours**: ``gas-1dcnn`` trained by :func:`gasdb_tools.bench.identify.train_identification` with
  the shipped recipe ``gas-1dcnn`` (checkpoint chosen on validation macro F1,
  test scored once);
* **baselines**: multinomial logistic regression on standardised readings, and scikit-learn's
  histogram gradient boosting (default settings, ``random_state=0``), both fit on train and scored
  on test with the same :func:`~gasdb_tools.bench.identify.classification_scores`.

Published figures (other splits, with duplicates): 1D-CNN 96.3 % accuracy (Ahn et al.), LSTM 83 %
(Narkhede et al.). Fit times are recorded as wall and process CPU time (the CPU time is what a
shared, loaded machine changes least). Run::

    .venv/bin/python benchmarks/bench_identification.py            # ~1 min on a 2-core CPU
    .venv/bin/python benchmarks/bench_identification.py --epochs 20 # quicker

Writes ``benchmarks/results/identification.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gasdb_tools.resources import bench_config
from gasdb_tools.fsutil import write_json  # noqa: E402

PUBLISHED = {"1D-CNN (Ahn et al.)": 0.963, "LSTM (Narkhede et al.)": 0.83}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("GASDB_SHARED_DATA", ROOT.parent / "shared" /
                                                                         "data")) / "multimodalgas")
    parser.add_argument("--epochs", type=int, help="override the recipe's 100 epochs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this tiny model)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "identification.json")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"{args.data}: not found (MultimodalGasData's sensor CSVs; pass --data)")

    import torch
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from gasdb_tools.bench.gasid import build_id_release, read_id_release
    from gasdb_tools.bench.identify import classification_scores, train_identification
    from gasdb_tools.bench.train import load_config

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-id-"))
    try:
        manifest = build_id_release(args.data, tmp / "release")
        rel = read_id_release(tmp / "release")
        config = load_config(bench_config("gas-1dcnn"), epochs=args.epochs)
        t0, c0 = time.perf_counter(), time.process_time()
        summary = train_identification(config, tmp / "release", tmp / "run", device="cpu")
        cnn_s, cnn_cpu = time.perf_counter() - t0, time.process_time() - c0
        models = {"gas-1dcnn (ours)": {"test": summary["test"]["scores"], "fit_s": round(cnn_s, 2),
                                       "fit_cpu_s": round(cnn_cpu, 2),
                                       "best_epoch": summary["best"]["epoch"], "epochs": config.epochs,
                                       "val_macro_f1_at_best": summary["best"]["value"]}}
        tr, te = rel.splits["train"], rel.splits["test"]
        baselines = {
            "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
            "gradient boosting (HistGradientBoosting)": HistGradientBoostingClassifier(random_state=0),
        }
        for name, clf in baselines.items():
            t0, c0 = time.perf_counter(), time.process_time()
            clf.fit(rel.values[tr], rel.labels[tr])
            fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
            pred = clf.predict(rel.values[te])
            models[name] = {"test": classification_scores(rel.labels[te], pred, rel.classes), "fit_s": round(fit_s, 2),
                            "fit_cpu_s": round(fit_cpu, 2)}
        result = {
            "benchmark": "identification (sensors only, MultimodalGasData v3 split)",
            "data": str(args.data), "split": manifest["splits"], "classes": manifest["classes"],
            "recipe": config.recipe, "torch_threads": args.threads,
            "models": models, "published_accuracy_other_splits": PUBLISHED,
            "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
        }
        write_json(args.out, result)
        print(f"test split: {manifest['splits']['test']} samples; train {manifest['splits']['train']}, "
              f"val {manifest['splits']['val']} (load average {result['load_avg_1min']})")
        width = max(len(k) for k in models)
        for name, m in models.items():
            s = m["test"]
            print(f"  {name:<{width}}  accuracy {100 * s['accuracy']:6.2f} %  macro F1 {100 * s['macro_f1']:6.2f} %"
                  f"  (fit {m['fit_s']:.1f} s wall, {m['fit_cpu_s']:.1f} s CPU)")
        for name, acc in PUBLISHED.items():
            print(f"  published, other split: {name} accuracy {100 * acc:.1f} %")
        print(f"wrote {args.out}")
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
