"""Benchmark the review app's gallery on 1,500 pairs of 640x512: first page cold and warm.

The workspace is built here: 5 recordings x 300 pairs of simulated 640x512 frames (RGB, 16-bit
thermal, aligned thermal, valid mask, 8-bit enhanced frame; each recording's 12 distinct frames
are hard-linked across its pairs, so the files read are as large as real ones), and one LabelMe
document per pair (the plume's polygons, statuses approved / edited / pending in turn).

Timed, each through Flask's test client in this process (no network; requests one after another,
so the figures are an upper bound for a browser fetching thumbnails in parallel):

* **cold**: no ``WS/.gasdb-cache`` at all (no document, metrics or picture cache), a new app: the
  gallery page (HTML), then the page with its 60 thumbnails made and cached;
* **warm**: the same page again with the thumbnails cached, in the same app and in a new app
  (a restarted server: only the disk caches remain);
* **sort by area, cold metrics**: the first page sorted by gas area, which needs every pair's mask;
* **baseline** (same run): :func:`gasdb_tools.review.read_states` with no cache -- reading every
  LabelMe document once, which any listing of review state must do.

Run::

    .venv/bin/python benchmarks/bench_review.py              # 1,500 pairs
    .venv/bin/python benchmarks/bench_review.py --pairs 300 --repeats 3

Writes ``benchmarks/results/review.json``. Targets: first page < 0.5 s warm, < 3 s cold.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gasdb_tools import __version__, labelme_format, review  # noqa: E402
from gasdb_tools.fsutil import write_json  # noqa: E402
from gasdb_tools.imaging import write_image  # noqa: E402
from gasdb_tools.polygons import mask_to_shapes  # noqa: E402
from gasdb_tools.synth import SynthRig  # noqa: E402
from gasdb_tools.workspace import Workspace, make_pair_id  # noqa: E402

SIZE = (640, 512)
DISTINCT = 12


def build(root: Path, pairs: int, recordings: int = 5) -> Workspace:
    ws = Workspace.init(root, name="bench-review")
    w, h = SIZE
    per = [pairs // recordings + (1 if i < pairs % recordings else 0) for i in range(recordings)]
    recs, rows = {}, {}
    for i in range(recordings):
        rec = f"rec{i:02d}"
        rig = SynthRig(seed=i, size=SIZE, distractors=False)
        recs[rec] = {"id": rec, "rgb": f"/videos/{rec}/rgb.mp4", "thermal": f"/videos/{rec}/thermal.mp4",
                     "scene": ("sunny", "rainy", "near", "far", "overlook")[i % 5], "tags": "", "rig": "default",
                     "rgb_sha256": f"{i:064x}", "thermal_sha256": f"{i + 100:064x}", "offset_s": repr(rig.offset_s),
                     "offset_source": "given", "offset_confidence": ""}
        hom = rig.homography
        frames = []
        for k in range(DISTINCT):
            t = rig.leak_start_s + 0.3 + k * 0.25
            rgb = rig.rgb(t + rig.offset_s)
            th8, gas = rig.thermal(t)
            thermal = th8.astype(np.uint16) * 257
            aligned = cv2.warpPerspective(thermal, hom, (w, h), flags=cv2.INTER_LINEAR)
            valid = cv2.warpPerspective(np.full((h, w), 255, np.uint8), hom, (w, h), flags=cv2.INTER_NEAREST)
            enhanced = (aligned // 257).astype(np.uint8)
            mask = cv2.warpPerspective(gas.astype(np.uint8), hom, (w, h), flags=cv2.INTER_NEAREST) > 0
            src = root / "_src" / rec / f"{k:02d}"
            files = {}
            for name, img in (("rgb", rgb), ("thermal", thermal), ("aligned", aligned), ("valid", valid),
                              ("enhanced", enhanced)):
                files[name] = write_image(src / f"{name}.png", img, compression=1, sync=False)
            frames.append((files, mask_to_shapes(mask)))
        for k in range(per[i]):
            t_th = round(1.0 + k * 0.2, 6)
            pid = make_pair_id(rec, t_th + rig.offset_s)
            files, shapes = frames[k % DISTINCT]
            row = {"pair_id": pid, "recording": rec, "t_rgb": repr(t_th + rig.offset_s), "t_thermal": repr(t_th),
                   "dt": "0.0", "rgb": f"frames/{rec}/rgb/{pid}.png", "thermal": f"frames/{rec}/thermal/{pid}.png",
                   "aligned": f"aligned/{rec}/{pid}.png", "valid": f"aligned/{rec}/{pid}_valid.png",
                   "enhanced": f"enhanced/{rec}/{pid}.png", "label": f"labels/{rec}/{pid}.json"}
            for col in ("rgb", "thermal", "aligned", "valid", "enhanced"):
                dst = ws.path(row[col])
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(files[col], dst)
            status = ("approved", "edited", "pending")[k % 3]
            doc = labelme_format.new_document(f"../../enhanced/{rec}/{pid}.png", h, w, shapes=shapes,
                                              flags={"approved": status == "approved"},
                                              gasdb={"pair_id": pid, "preannot": {"method": "gas"},
                                                     "review": {"status": "pending"}})
            if status == "pending":
                doc["gasdb"]["preannot"]["content_sha256"] = review.content_hash(doc)
            elif status == "edited":
                doc["shapes"] = doc["shapes"][:-1] if len(doc["shapes"]) > 1 else []
            labelme_format.write(doc, ws.path(row["label"]))
            rows[pid] = row
    with ws.transaction() as index:
        index.recordings.update(recs)
        index.pairs.update(rows)
    return ws


def page_and_thumbs(client, url: str) -> tuple[float, float, int]:
    """Seconds for the page's HTML, seconds for HTML + every thumbnail it shows, and their count."""
    t0 = time.perf_counter()
    r = client.get(url, headers={"Host": "127.0.0.1:5000"})
    t_html = time.perf_counter() - t0
    assert r.status_code == 200, r.status_code
    thumbs = re.findall(r'src="(/img/thumb/[^"]+)"', r.get_data(as_text=True))
    for src in thumbs:
        assert client.get(src.replace("&amp;", "&"), headers={"Host": "127.0.0.1:5000"}).status_code == 200
    return t_html, time.perf_counter() - t0, len(thumbs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "review.json")
    args = ap.parse_args()
    from gasdb_tools.reviewapp import create_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    try:
        t0 = time.perf_counter()
        ws = build(tmp / "ws", args.pairs)
        build_s = time.perf_counter() - t0
        load_before = os.getloadavg()
        cache = ws.root / ".gasdb-cache"
        runs = {k: [] for k in ("baseline_read_states", "app_create_cold", "cold_html", "cold_page_thumbs",
                                "warm_html", "warm_page_thumbs", "warm_new_app_html", "warm_new_app_page_thumbs",
                                "sort_area_cold_metrics", "sort_area_warm")}
        n_thumbs = 0
        for _ in range(args.repeats):
            shutil.rmtree(cache, ignore_errors=True)
            t0 = time.perf_counter()
            review.read_states(ws)
            runs["baseline_read_states"].append(time.perf_counter() - t0)
            shutil.rmtree(cache, ignore_errors=True)
            t0 = time.perf_counter()
            app = create_app(ws, host="127.0.0.1", port=5000, warm=False)
            runs["app_create_cold"].append(time.perf_counter() - t0)
            client = app.test_client()
            html, full, n_thumbs = page_and_thumbs(client, "/")
            runs["cold_html"].append(html)
            runs["cold_page_thumbs"].append(full)
            html, full, _ = page_and_thumbs(client, "/")
            runs["warm_html"].append(html)
            runs["warm_page_thumbs"].append(full)
            client2 = create_app(ws, host="127.0.0.1", port=5000, warm=False).test_client()
            html, full, _ = page_and_thumbs(client2, "/")
            runs["warm_new_app_html"].append(html)
            runs["warm_new_app_page_thumbs"].append(full)
            t0 = time.perf_counter()
            assert client.get("/?sort=area&desc=1", headers={"Host": "127.0.0.1:5000"}).status_code == 200
            runs["sort_area_cold_metrics"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert client.get("/?sort=area", headers={"Host": "127.0.0.1:5000"}).status_code == 200
            runs["sort_area_warm"].append(time.perf_counter() - t0)
        summary = {k: {"median_s": round(statistics.median(v), 3), "best_s": round(min(v), 3),
                       "all_s": [round(x, 3) for x in v]} for k, v in runs.items()}
        base = summary["baseline_read_states"]["median_s"]
        result = {
            "benchmark": "review app gallery, first page", "pairs": args.pairs, "page_size": 60,
            "thumbnails_on_page": n_thumbs, "frame_size": list(SIZE), "repeats": args.repeats,
            "build_workspace_s": round(build_s, 1), "timings": summary,
            "ratios_vs_baseline": {k: round(v["median_s"] / base, 2) for k, v in summary.items() if base},
            "targets": {"warm_first_page_s": 0.5, "cold_first_page_s": 3.0},
            "met": {"warm": summary["warm_new_app_page_thumbs"]["median_s"] < 0.5
                    and summary["warm_page_thumbs"]["median_s"] < 0.5,
                    "cold": summary["cold_page_thumbs"]["median_s"] < 3.0},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "load_avg_before": [round(x, 2) for x in load_before],
                        "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
            "gasdb_tools": __version__,
        }
        write_json(args.out, result)
        for k, v in summary.items():
            print(f"{k:28s} median {v['median_s']:7.3f} s  best {v['best_s']:7.3f} s")
        print(f"thumbnails on the first page: {n_thumbs}; load {result['machine']['load_avg_before']} -> "
              f"{result['machine']['load_avg_after']}; wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
