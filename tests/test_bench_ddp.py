"""``gasdb bench train`` under torch.distributed (2 Gloo processes on CPU), as torchrun launches it."""

from __future__ import annotations

import json
import os
import socket

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from _bench_gasdb import make_gasdb  # noqa: E402


def _worker(rank: int, world: int, port: int, data: str, out: str, result_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                       "RANK": str(rank), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from gasdb_tools.bench.train import TrainConfig, train

    cfg = TrainConfig(model="mfnet", epochs=1, num_workers=0, batch_size=2, val_fraction=0.25, val_block=3)
    summary = train(cfg, data, out, device="cpu")
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({k: summary[k] for k in ("best", "test", "epochs_run")}, fh)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_training_counts_every_evaluation_pixel_once(tmp_path):
    data = make_gasdb(tmp_path / "gasdb", n_train=12, n_test=5)  # 5 test images: uneven shards over 2 ranks
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    torch.multiprocessing.spawn(_worker, args=(2, port, str(data), str(out), str(results)), nprocs=2, join=True)
    r0 = json.loads((results / "rank0.json").read_text())
    r1 = json.loads((results / "rank1.json").read_text())
    assert r0 == r1  # every rank ends with the same (all-reduced) numbers
    assert r0["test"]["scores"]["sum"]["n_pixels"] == 5 * 64 * 80
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "epoch", "test"]  # rank 0 alone writes the log
    assert events[0]["world_size"] == 2
    n_val = events[0]["n_val"]
    assert sum(sum(row) for row in events[1]["val_confusion_matrix"]) == n_val * 64 * 80
