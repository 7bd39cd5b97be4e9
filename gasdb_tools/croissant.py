"""MLCommons Croissant metadata of a release (``croissant.json``, Croissant 1.1).

The document describes every file of the release as a ``cr:FileObject`` with its sha256 and
encoding format (all but ``croissant.json`` itself, ``manifest.json`` and ``SHA256SUMS``, which
are written after it), the Parquet shards also as one ``cr:FileSet``, and two record sets:

* ``pairs`` from ``index.csv``: pair_id, recording, scene, split, modality, review;
* ``samples`` from the Hugging Face shards (``hf/data/*.parquet``): the same ids plus frame size,
  gas pixel count and the images (``sc:ImageObject``: the PNG bytes of each Parquet image struct).

It validates with ``mlcroissant`` and ``mlcroissant.Dataset(...).records("pairs")`` reads it; the
tool writes it from its own records (no mlcroissant at build time).

References
----------
MLCommons, "Croissant format specification", version 1.1, https://docs.mlcommons.org/croissant/.
"""

from __future__ import annotations

__all__ = ["CONFORMS_TO", "CONTEXT", "NO_LICENSE", "croissant_document", "licence_sentence"]

CONFORMS_TO = "http://mlcommons.org/croissant/1.1"
#: The JSON-LD context of the Croissant specification.
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
_FORMATS = {".csv": "text/csv", ".json": "application/json", ".parquet": "application/x-parquet",
            ".png": "image/png", ".md": "text/markdown", ".html": "text/html", ".txt": "text/plain",
            ".h5": "application/x-hdf5"}
# ``name`` (5 digits) is left out of the CSV record set: CSV readers infer it as a number ("00001" -> 1);
# the samples record set has it as text.
_INDEX_FIELDS = ("pair_id", "recording", "scene", "split", "modality", "review")
_SAMPLE_FIELDS = {"pair_id": "sc:Text", "name": "sc:Text", "recording": "sc:Text", "scene": "sc:Text",
                  "split": "sc:Text", "review": "sc:Text", "modality": "sc:Text", "height": "sc:Integer",
                  "width": "sc:Integer", "gas_pixels": "sc:Integer"}
_IMAGES = {"thermal": "The thermal frame in the annotation frame, bit depth kept (PNG).",
           "mask": "Class-index mask: 0 background, 1 gas, 255 ignore (PNG).",
           "valid": "255 where the thermal camera sees, 0 outside its warped view (PNG).",
           "rgb": "The RGB frame in the annotation frame (PNG); null for a thermal camera alone."}


#: SPDX's value for "no licence was stated": a release's default, so no document claims a licence nobody chose.
NO_LICENSE = "NOASSERTION"


def licence_sentence(spdx: str) -> str:
    """How the datasheet and the page state a release's licence (``NO_LICENSE`` says none was given)."""
    if spdx == NO_LICENSE:
        return "no licence stated by the maintainers (SPDX `NOASSERTION`)"
    return f"licence `{spdx}`"


def _license_url(spdx: str) -> str:
    return f"https://spdx.org/licenses/{spdx}.html"


def _file_id(path: str) -> str:
    return path


def croissant_document(meta: dict, summary: dict, plan, files: list[dict]) -> dict:
    """The ``croissant.json`` document of a release.

    Parameters
    ----------
    meta : dict
        ``name``, ``version``, ``license`` (SPDX), ``created``, ``parent_version``.
    summary : dict
        :func:`gasdb_tools.release_docs.summary`.
    plan : ReleasePlan
    files : list of dict
        ``{"path", "bytes", "sha256"}`` of every file already in the release.
    """
    total = summary["counts"]["total"]
    distribution = []
    for f in files:
        ext = "." + f["path"].rsplit(".", 1)[-1] if "." in f["path"] else ""
        distribution.append({"@type": "cr:FileObject", "@id": _file_id(f["path"]), "name": f["path"],
                             "contentUrl": f["path"], "contentSize": f"{f['bytes']} B",
                             "encodingFormat": _FORMATS.get(ext, "application/octet-stream"), "sha256": f["sha256"]})
    distribution.append({"@type": "cr:FileSet", "@id": "hf-parquet", "name": "hf-parquet",
                         "description": "The Hugging Face Parquet shards, one row per pair.",
                         "encodingFormat": "application/x-parquet", "includes": "hf/data/*.parquet"})
    pairs_fields = [{"@type": "cr:Field", "@id": f"pairs/{k}", "name": k, "dataType": "sc:Text",
                     "source": {"fileObject": {"@id": "index.csv"}, "extract": {"column": k}}}
                    for k in _INDEX_FIELDS]
    sample_fields = [{"@type": "cr:Field", "@id": f"samples/{k}", "name": k, "dataType": t,
                      "source": {"fileSet": {"@id": "hf-parquet"}, "extract": {"column": k}}}
                     for k, t in _SAMPLE_FIELDS.items()]
    sample_fields += [{"@type": "cr:Field", "@id": f"samples/{k}", "name": k, "description": d,
                       "dataType": "sc:ImageObject",
                       "source": {"fileSet": {"@id": "hf-parquet"}, "extract": {"column": k},
                                  "transform": {"jsonPath": "bytes"}}}
                      for k, d in _IMAGES.items() if k != "rgb"]
    mods = summary["frames"]["modalities"]
    desc = (f"Pixel-level gas-leak segmentation: {total['pairs']} pairs from {total['recordings']} recordings "
            f"({', '.join(f'{v} {k}' for k, v in mods.items())}), {total['positive_pairs']} with gas; masks 0 "
            "background, 1 gas, 255 ignore. Built with gasdb-tools; see DATASHEET.md.")
    doc = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "name": meta["name"],
        "description": desc,
        "conformsTo": CONFORMS_TO,
        "version": meta["version"],
        "datePublished": meta["created"],
        **({} if meta["license"] == NO_LICENSE else {"license": _license_url(meta["license"])}),
        "url": "index.html",
        "citeAs": "Datasheet: DATASHEET.md (cite the dataset's creators; see the datasheet)",
        "keywords": ["gas leak", "thermal", "infrared", "segmentation", "Gas-DB"],
        "isLiveDataset": False,
        "distribution": distribution,
        "recordSet": [
            {"@type": "cr:RecordSet", "@id": "pairs", "name": "pairs",
             "description": "One record per released pair (index.csv).", "key": {"@id": "pairs/pair_id"},
             "field": pairs_fields},
            {"@type": "cr:RecordSet", "@id": "samples", "name": "samples",
             "description": "One record per released pair with its images (hf/data/*.parquet).",
             "key": {"@id": "samples/pair_id"}, "field": sample_fields},
        ],
    }
    if meta.get("parent_version"):
        doc["isBasedOn"] = f"version {meta['parent_version']}"
    return doc
