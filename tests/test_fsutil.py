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
