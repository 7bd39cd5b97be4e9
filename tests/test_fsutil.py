import json
import threading
import time

import pytest

from gasdb_tools.errors import GasdbError, WorkspaceError
from gasdb_tools.fsutil import dumps_json, file_lock, read_file, read_json, sha256_file, write_json


def test_json_is_deterministic_and_refuses_nan(tmp_path):
    assert dumps_json({"b": 1, "a": [1.5]}) == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        dumps_json({"x": float("nan")})
    write_json(tmp_path / "x.json", {"k": "ü"})
    assert read_json(tmp_path / "x.json") == {"k": "ü"}


def test_read_json_errors_name_file_and_position(tmp_path):
    (tmp_path / "bad.json").write_text('{"a": 1,,}')
    with pytest.raises(WorkspaceError, match=r"bad.json: line 1 column 9: malformed JSON"):
        read_json(tmp_path / "bad.json")


def test_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_lock_serialises_and_times_out(tmp_path):
    lock = tmp_path / ".lock"
    order = []

    def hold():
        with file_lock(lock):
            order.append("a")
            time.sleep(0.3)
            order.append("b")

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.05)
    with pytest.raises(WorkspaceError, match="holds the workspace lock"):
        with file_lock(lock, timeout=0.1):
            pass
    with file_lock(lock, timeout=5):
        order.append("c")
    t.join()
    assert order == ["a", "b", "c"]


def test_error_message_format():
    e = GasdbError("bad", file="f.json", field="shapes[0]", fix="redraw")
    assert str(e) == "f.json: shapes[0]: bad -> redraw"
    assert json.loads(json.dumps(e.to_dict()))["fix"] == "redraw"


def test_read_file_reads_whole_files_caps_and_refuses_links_on_request(tmp_path):
    import os

    data = os.urandom(200_000)  # larger than one follow-up block
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert read_file(path) == data
    assert read_file(path, cap=10) == data[:11]  # cap + 1: the caller sees it is too large
    assert read_file(path, cap=len(data)) == data
    (tmp_path / "empty").write_bytes(b"")
    assert read_file(tmp_path / "empty") == b""
    os.symlink(path, tmp_path / "link")
    assert read_file(tmp_path / "link") == data
    with pytest.raises(OSError):
        read_file(tmp_path / "link", follow_links=False)


def test_stage_bytes_writes_a_temp_file_beside_the_target_and_leaves_the_target_alone(tmp_path):
    import os

    from gasdb_tools.fsutil import stage_bytes

    target = tmp_path / "sub" / "doc.json"
    tmp = stage_bytes(target, b"new")
    assert tmp.parent == target.parent and tmp.name.startswith(".doc.json.") and tmp.suffix == ".tmp"
    assert tmp.read_bytes() == b"new" and not target.exists()
    assert os.stat(tmp).st_mode & 0o777 == 0o666 & ~_umask()  # the umask's mode, not mkstemp's 0600
    os.replace(tmp, target)
    assert target.read_bytes() == b"new" and list(target.parent.iterdir()) == [target]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_lock_released_by_another_process_is_taken_within_milliseconds(tmp_path):
    """The waiter asks again after 0.5, 1, 2, ... ms (at most 20): a short hold (a document's
    rename) costs the waiter about its length, not a fixed 20 ms poll (which it was)."""
    import multiprocessing

    lock = tmp_path / ".lock"
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_hold_lock, args=(str(lock), there, 5))
    proc.start()
    waits = []
    try:
        for _ in range(5):
            assert here.poll(60) and here.recv() == "held"
            threading.Timer(0.002, here.send, args=("go",)).start()  # the holder lets go after about 2 ms
            t0 = time.perf_counter()
            with file_lock(lock, timeout=5):
                waits.append(time.perf_counter() - t0)
            here.send("next")
    finally:
        proc.join(30)
    assert min(waits) < 0.015, waits


def _hold_lock(path, conn, rounds):
    for _ in range(rounds):
        with file_lock(path):
            conn.send("held")
            conn.recv()
        conn.recv()
