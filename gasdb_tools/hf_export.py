"""The Hugging Face ``datasets`` export of a release: Parquet shards plus a dataset card (``hf/``).

``hf/data/<split>-NNNNN-of-NNNNN.parquet`` holds one row per pair (:data:`COLUMNS`): ids, scene,
split, review status, modality, frame size, times, gas pixel count, and the images as the
``datasets`` ``Image`` feature (a struct of PNG ``bytes`` and ``path``): ``rgb`` (null for a
thermal camera alone), ``thermal`` (its bit depth kept: 16-bit PNGs decode as PIL mode ``I;16``),
``mask`` (0 background, 1 gas, 255 ignore) and ``valid`` (255 where the thermal camera sees). The
Parquet schema carries the ``huggingface`` feature metadata and ``hf/README.md`` the YAML header
the hub reads, so both of these return the splits::

    datasets.load_dataset("parquet", data_dir="RELEASE/hf/data")
    datasets.load_dataset("RELEASE/hf")

Shards are written with pyarrow (a ``release`` dependency) in pair-id order, uncompressed (the
images are PNG already), so the same release gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gasdb_tools.croissant import NO_LICENSE

__all__ = ["COLUMNS", "IMAGE_COLUMNS", "ROWS_PER_SHARD", "ShardWriter", "dataset_card", "shard_name"]

#: Value columns and their Arrow types (name -> type name), in file order; then :data:`IMAGE_COLUMNS`.
COLUMNS = {"pair_id": "string", "name": "string", "recording": "string", "scene": "string", "split": "string",
           "review": "string", "modality": "string", "height": "int32", "width": "int32",
           "rgb_resized_from": "string", "t_rgb": "float64", "t_thermal": "float64", "dt": "float64",
           "gas_pixels": "int64", "sensors": "string"}
IMAGE_COLUMNS = ("rgb", "thermal", "mask", "valid")
#: Rows per Parquet file (shards stay well under the hub's 500 MB advice for 640x512 frames).
ROWS_PER_SHARD = 500
_ROW_GROUP = 64
_HF_LICENSES = {"cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc0-1.0", "mit", "apache-2.0",
                "cc-by-nd-4.0", "cc-by-nc-nd-4.0", "odbl", "pddl", "odc-by", "gpl-3.0", "bsd-3-clause"}


def shard_name(split: str, k: int, n: int) -> str:
    """``data/<split>-00000-of-00002.parquet``."""
    return f"data/{split}-{k:05d}-of-{n:05d}.parquet"


def _schema():
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [pa.field(k, getattr(pa, t)()) for k, t in COLUMNS.items()]
    fields += [pa.field(k, image) for k in IMAGE_COLUMNS]
    features = {k: {"dtype": t, "_type": "Value"} for k, t in COLUMNS.items()}
    features.update({k: {"_type": "Image"} for k in IMAGE_COLUMNS})
    meta = {"huggingface": json.dumps({"info": {"features": features}}, sort_keys=True)}
    return pa.schema(fields, metadata=meta)


class ShardWriter:
    """Stream rows of several splits into Parquet shards of :data:`ROWS_PER_SHARD` rows each.

    Parameters
    ----------
    root : path
        The ``hf/`` folder.
    counts : dict
        Split -> number of rows it will get (fixes the shard names up front).
    """

    def __init__(self, root, counts: dict, *, rows_per_shard: int = ROWS_PER_SHARD):
        import pyarrow  # noqa: F401 - fail early with ImportError when the dependency is missing

        self.root = Path(root)
        self.rows_per_shard = int(rows_per_shard)
        self.counts = dict(counts)
        self.schema = _schema()
        self._seen = {s: 0 for s in counts}
        self._buf = {s: [] for s in counts}
        self._writer = {}
        self._open = {}
        self.written: list[str] = []

    def _shards(self, split: str) -> int:
        return max(1, -(-self.counts[split] // self.rows_per_shard))

    def add(self, split: str, row: dict) -> None:
        """Add one row (values of :data:`COLUMNS` and PNG bytes, or None, of :data:`IMAGE_COLUMNS`)."""
        self._buf[split].append(row)
        self._seen[split] += 1
        shard_end = self._seen[split] % self.rows_per_shard == 0 or self._seen[split] == self.counts[split]
        if len(self._buf[split]) >= _ROW_GROUP or shard_end:
            self._flush(split)
        if shard_end:
            self._close(split)

    def _flush(self, split: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self._buf[split]
        if not rows:
            return
        if split not in self._writer:
            k = (self._seen[split] - 1) // self.rows_per_shard
            rel = shard_name(split, k, self._shards(split))
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer[split] = pq.ParquetWriter(
                path, self.schema, compression="none", use_dictionary=[k for k, t in COLUMNS.items() if t == "string"],
                write_statistics=list(COLUMNS))
            self._open[split] = rel
        arrays = {k: [r.get(k) for r in rows] for k in COLUMNS}
        for k in IMAGE_COLUMNS:
            arrays[k] = [None if r.get(k) is None else {"bytes": r[k], "path": None} for r in rows]
        self._writer[split].write_table(pa.table(arrays, schema=self.schema), row_group_size=_ROW_GROUP)
        self._buf[split] = []

    def _close(self, split: str) -> None:
        if split in self._writer:
            self._writer.pop(split).close()
            self.written.append(self._open.pop(split))

    def close(self) -> dict[str, tuple[int, str]]:
        """Finish every shard; return ``{relative path: (bytes, sha256)}`` of the files written."""
        for split in list(self._buf):
            self._flush(split)
            self._close(split)
        out = {}
        for rel in sorted(self.written):
            data = (self.root / rel).read_bytes()
            out[rel] = (len(data), hashlib.sha256(data).hexdigest())
        return out

    def abort(self) -> None:
        """Close open files after a failure (the caller removes the folder)."""
        for w in self._writer.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - already failing
                pass
        self._writer.clear()


def _yaml_str(text: str) -> str:
    return json.dumps(str(text), ensure_ascii=False)  # a JSON string is a valid YAML flow scalar


def dataset_card(meta: dict, summary: dict, counts: dict, shard_bytes: dict | None = None) -> str:
    """``hf/README.md``: the YAML header the hub and ``datasets`` read (configs, features, splits,
    licence), then a short card pointing at the release's datasheet."""
    counts = {s: n for s, n in counts.items() if n}  # an empty split has no shard to point at
    lic = str(meta["license"]).lower()
    if meta["license"] == NO_LICENSE:
        lines = ["---", "license: unknown"]  # the hub's value for a dataset whose licence is not known
    else:
        lines = ["---", f"license: {lic if lic in _HF_LICENSES else 'other'}"]
    if lic not in _HF_LICENSES and meta["license"] != NO_LICENSE:
        lines.append(f"license_name: {_yaml_str(meta['license'])}")
    lines += [f"pretty_name: {_yaml_str(meta['name'] + ' ' + meta['version'])}",
              "task_categories:", "- image-segmentation", "tags:", "- thermal", "- gas-leak", "- gasdb",
              "configs:", "- config_name: default", "  data_files:"]
    for s in counts:
        lines += [f"  - split: {s}", f"    path: data/{s}-*.parquet"]
    lines += ["dataset_info:", "  features:"]
    for k, t in COLUMNS.items():
        lines += [f"  - name: {k}", f"    dtype: {t}"]
    for k in IMAGE_COLUMNS:
        lines += [f"  - name: {k}", "    dtype: image"]
    lines.append("  splits:")
    sizes = {s: sum(b for rel, b in (shard_bytes or {}).items() if rel.startswith(f"data/{s}-")) for s in counts}
    for s, n in counts.items():
        lines += [f"  - name: {s}", f"    num_bytes: {sizes[s]}", f"    num_examples: {n}"]
    lines += [f"  download_size: {sum(sizes.values())}", f"  dataset_size: {sum(sizes.values())}"]
    lines.append("---")
    total = summary["counts"]["total"]
    ann = summary["annotation"]["review"]
    body = [
        "",
        f"# {meta['name']} {meta['version']}",
        "",
        f"{total['pairs']} pairs from {total['recordings']} recordings, {total['positive_pairs']} with gas; "
        f"review: {ann['pending']} pending, {ann['edited']} edited, {ann['approved']} approved. "
        "See `../DATASHEET.md` for how the data was made and its known limits.",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_dir="hf/data")   # or load_dataset("hf") from the release folder',
        "```",
        "",
        "Columns: " + ", ".join(f"`{k}`" for k in (*COLUMNS, *IMAGE_COLUMNS)) + ". `rgb` is null for "
        "pairs of a thermal camera alone (`modality` = `thermal`); `mask` is 0 background, 1 gas, 255 ignore "
        "(leave 255 out of scores); `thermal` keeps its bit depth.",
        "",
    ]
    return "\n".join(lines + body)
