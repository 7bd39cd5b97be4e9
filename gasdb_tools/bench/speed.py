"""Parameters, FLOPs and latency of a model under one protocol (``reference-models.md`` §6-7).

* **Params:** Σ ``numel`` over all parameters, unused and dead ones included (RT-CAN's 110,912
  unused mini-ASPP and 3,909 dead spatial-attention parameters are in its total).
* **FLOPs:** ``torch.utils.flop_counter.FlopCounterMode`` on a 1×4×512×640 input in eval mode,
  2 FLOPs per multiply-accumulate for conv, transposed conv and matmul only; reported as GFLOPs
  **and** GMACs (= GFLOPs / 2). Counted on the ``meta`` device: exact, no memory, about a second.
  Papers' "GFLOPs" from thop/fvcore are usually MACs.
* **Latency:** batch 1, input already on the device, ``eval()`` + ``inference_mode``, forward to
  logits including the head sum; warm-up (≥ 50 iterations and ≥ 2 s by default), then ``iters``
  timed iterations, each bracketed by CUDA events on a GPU (one synchronize at the end) or by
  ``time.perf_counter`` on CPU (labelled CPU latency, with thread count and CPU model); median and
  p90 per repeat, FPS = 1000 / median. fp32 is the headline; AMP (fp16 autocast on CUDA, bf16 on
  CPU), channels_last and ``torch.compile`` are separate, labelled settings; compile time is
  reported on its own. The environment (GPU, driver, CUDA, cuDNN, torch, TF32 and cudnn.benchmark
  flags, CPU, threads) is recorded with every result.
* **Form:** models with a re-parameterised inference form (RSFNet) are measured as trained
  (``form = "train"``) or fused (``deploy=True``, ``form = "deploy"``: built with ``deploy=True``).
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import time

import numpy as np
import torch

__all__ = ["count_params", "count_flops", "environment", "measure_latency", "benchmark", "markdown_table",
           "merge_results", "has_deploy_form", "DEFAULT_SHAPE"]

#: The protocol's input: batch 1, RGB + thermal, 512×640 (Gas-DB frames).
DEFAULT_SHAPE = (1, 4, 512, 640)


def count_params(model: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """Σ ``numel`` over the parameters (all of them, or those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model_or_name, shape=DEFAULT_SHAPE, *, n_heads: int | None = None, **model_kwargs) -> int:
    """FLOPs (2 per MAC) of one forward pass, counted by ``FlopCounterMode``.

    Parameters
    ----------
    model_or_name : str or torch.nn.Module
        A registry name (the model is built on the ``meta`` device: fast and memory-free) or a
        module (counted on the device its parameters are on).
    shape : tuple of int
        Input shape ``(N, 4, H, W)``.

    Examples
    --------
    >>> round(count_flops("rtcan-r50") / 1e9, 1)
    273.5
    """
    from torch.utils.flop_counter import FlopCounterMode

    from gasdb_tools.bench.registry import create_model, get_spec, model_heads

    if isinstance(model_or_name, str):
        spec = get_spec(model_or_name)
        with torch.device("meta"):
            model = create_model(model_or_name, **model_kwargs)
        device = torch.device("meta")
        n_heads = spec.heads if n_heads is None else n_heads
    else:
        model = model_or_name
        device = next(model.parameters()).device
        n_heads = getattr(model, "n_heads", 1) if n_heads is None else n_heads
    was_training = model.training
    model.eval()
    x = torch.zeros(shape, device=device) if device.type != "meta" else torch.empty(shape, device=device)
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            heads = model_heads(model(x), n_heads)
            if len(heads) > 1:
                sum(heads)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi(index: int) -> dict:
    try:
        out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,"
                              "clocks.mem,power.limit", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    keys = ("driver", "sm_clock", "sm_clock_max", "mem_clock", "power_limit")
    return dict(zip(keys, (v.strip() for v in out.split(","))))


def environment(device) -> dict:
    """What the timing ran on: torch, device, CPU, threads, load average, time; GPU, driver, CUDA, cuDNN and flags."""
    import datetime
    import os

    device = torch.device(device)
    env = {"torch": torch.__version__, "device_type": device.type, "cpu": _cpu_model(),
           "threads": torch.get_num_threads(), "python": platform.python_version(), "platform": platform.platform(),
           "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
           "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        env.update({"gpu": torch.cuda.get_device_name(idx), "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version(), "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                    "allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
                    "cudnn_benchmark": torch.backends.cudnn.benchmark, **_nvidia_smi(idx)})
    return env


def _stats(ms: list[float]) -> dict:
    arr = np.asarray(ms, dtype=np.float64)
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)),
            "mean_ms": float(arr.mean()), "min_ms": float(arr.min()), "n": int(arr.size)}


def measure_latency(model: torch.nn.Module, *, device="cpu", shape=DEFAULT_SHAPE, n_heads: int = 1,
                    warmup_iters: int = 50, warmup_s: float = 2.0, iters: int = 200, repeats: int = 3,
                    amp: bool = False, channels_last: bool = False, compile: bool = False, tf32: bool = False,
                    cudnn_benchmark: bool = False) -> dict:
    """Time the forward pass (to summed logits) of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        Moved to ``device`` and put in eval mode.
    shape : tuple
        Input shape (batch first).
    n_heads : int
        Heads to sum (two-head models include the sum in the timing).
    warmup_iters, warmup_s : int, float
        Warm-up until both are reached.
    iters, repeats : int
        Timed iterations per repeat, and repeats.
    amp, channels_last, compile : bool
        Labelled variants (fp16/bf16 autocast, NHWC memory format, ``torch.compile``).
    tf32, cudnn_benchmark : bool
        CUDA only: set ``allow_tf32`` (matmul and cuDNN) and ``cudnn.benchmark`` for the run (both
        off by default: a true fp32 headline) and restore them afterwards; the values are recorded.

    Returns
    -------
    dict
        ``timer`` (``cuda-events`` or ``perf_counter``), ``repeats`` (list of per-repeat stats),
        ``median_ms`` (median of the repeat medians), ``p90_ms``, ``fps``, ``compile_s``,
        ``warmup_iters_run``, and the settings.
    """
    from gasdb_tools.bench.registry import model_heads

    device = torch.device(device)
    if min(iters, repeats) < 1 or warmup_iters < 0 or warmup_s < 0:
        raise ValueError(f"need iters >= 1, repeats >= 1, warm-up >= 0; got iters={iters}, repeats={repeats}, "
                         f"warmup_iters={warmup_iters}, warmup_s={warmup_s}")
    model = model.to(device).eval()
    x = torch.rand(shape, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    fn = torch.compile(model) if compile else model  # compiles lazily, on the first (separately timed) call

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            heads = model_heads(fn(x), n_heads)
            return heads[0] if len(heads) == 1 else sum(heads)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    flags = None
    if device.type == "cuda":
        flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        runs, n_warm, compile_s = _timed(step, sync, device, model, compile, warmup_iters, warmup_s, iters, repeats)
    finally:
        if flags is not None:
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark) = flags
    median = statistics.median(r["median_ms"] for r in runs)
    return {"timer": "cuda-events" if device.type == "cuda" else "perf_counter",
            "label": ("GPU" if device.type == "cuda" else "CPU") + " latency", "shape": list(shape),
            "precision": ("fp16 autocast" if device.type == "cuda" else "bf16 autocast") if amp else "fp32",
            "channels_last": channels_last, "compile": compile, "compile_s": compile_s, "warmup_iters_run": n_warm,
            "tf32": tf32 if device.type == "cuda" else None,
            "cudnn_benchmark": cudnn_benchmark if device.type == "cuda" else None,
            "iters": iters, "repeats": runs, "median_ms": median,
            "p90_ms": statistics.median(r["p90_ms"] for r in runs), "fps": 1000.0 / median}


def _timed(step, sync, device, model, compile, warmup_iters, warmup_s, iters, repeats):
    """Warm up, then time ``repeats`` × ``iters`` calls of ``step``; returns (runs, n_warm, compile_s)."""
    compile_s = None
    with torch.inference_mode():
        if compile:
            t0 = time.perf_counter()
            step()  # the first call compiles
            sync()
            compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_warm = 0
        while n_warm < warmup_iters or time.perf_counter() - t0 < warmup_s:
            step()
            sync()
            n_warm += 1
        runs = []
        for _ in range(repeats):
            if device.type == "cuda":
                events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                          for _ in range(iters)]
                for start, end in events:
                    start.record()
                    step()
                    end.record()
                torch.cuda.synchronize()
                ms = [s.elapsed_time(e) for s, e in events]
            else:
                ms = []
                for _ in range(iters):
                    t = time.perf_counter()
                    step()
                    ms.append((time.perf_counter() - t) * 1e3)
            runs.append(_stats(ms))
    return runs, n_warm, compile_s


def has_deploy_form(name: str) -> bool:
    """Whether a registered model builds a re-parameterised inference form (``deploy=True``; its spec says so)."""
    from gasdb_tools.bench.registry import get_spec

    return get_spec(name).deploy_form


def benchmark(name: str, *, device="cpu", shape=DEFAULT_SHAPE, latency: bool = True, flops: bool = True,
              model_kwargs: dict | None = None, deploy: bool = False, **timing) -> dict:
    """Params, FLOPs (GFLOPs and GMACs) and latency of a registered model, with its environment.

    ``deploy=True`` measures the re-parameterised inference form (the factory gets ``deploy=True``;
    a model without one raises ``ValueError``).
    """
    from gasdb_tools.bench.registry import count_parameters, create_model, get_spec

    spec = get_spec(name)
    if spec.task != "segmentation":
        raise ValueError(f"{name} is a {spec.task} model; the speed protocol times segmentation models")
    kwargs = dict(model_kwargs or {})
    if deploy:
        if not spec.deploy_form:
            raise ValueError(f"{name} does not take deploy=True (it has no re-parameterised form)")
        kwargs["deploy"] = True
    result = {"model": name, "form": "deploy" if deploy else "train", "heads": spec.heads,
              "params": count_parameters(name, **kwargs), "reference_params": spec.reference_params,
              "input_shape": list(shape)}
    if flops:
        f = count_flops(name, shape, **kwargs)
        result.update({"flops": f, "gflops": f / 1e9, "gmacs": f / 2e9})
    if latency:
        h, w = shape[-2:]
        if h % spec.input_multiple or w % spec.input_multiple:
            raise ValueError(f"{name} needs H and W divisible by {spec.input_multiple}, got {h}x{w}")
        model = create_model(name, **kwargs)
        result["latency"] = measure_latency(model, device=device, shape=shape, n_heads=spec.heads, **timing)
        del model
    result["env"] = environment(device)
    return result


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _timing_note(r: dict) -> str:
    """The timing settings and environment of a result (without its load average and time)."""
    lat, env = r.get("latency"), r.get("env", {})
    if not lat:
        return ""
    cuda_flags = ""
    if lat.get("tf32") is not None:
        cuda_flags = f", tf32={lat['tf32']}, cudnn.benchmark={lat['cudnn_benchmark']}"
    return (f"{lat['label']}, {lat['precision']}, channels_last={lat['channels_last']}, compile={lat['compile']}"
            f"{cuda_flags}; warm-up, then {lat['iters']} timed × "
            f"{len(lat['repeats'])} repeat(s), timer {lat['timer']}. Environment: torch {env.get('torch')}, "
            f"{env.get('cpu')}, {env.get('threads')} thread(s)"
            + (f", GPU {env.get('gpu')}, driver {env.get('driver')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}"
               if env.get("gpu") else ""))


def _conditions(rows: list[dict]) -> str:
    """Warm-up iterations run, load average and measurement time of a group of results, as recorded
    (ranges when they differ)."""
    warm = [r["latency"]["warmup_iters_run"] for r in rows if (r.get("latency") or {}).get("warmup_iters_run") is not None]
    loads = [r["env"]["load_avg_1min"] for r in rows if r.get("env", {}).get("load_avg_1min") is not None]
    times = sorted(r["env"]["measured_at"] for r in rows if r.get("env", {}).get("measured_at"))
    parts = []
    if warm:
        lo, hi = min(warm), max(warm)
        parts.append(f"{lo} warm-up iterations" if lo == hi else f"{lo}-{hi} warm-up iterations")
    if loads:
        lo, hi = min(loads), max(loads)
        parts.append(f"load average {lo}" if lo == hi else f"load average {lo}-{hi}")
    if times:
        parts.append(f"measured {times[0]}" if times[0] == times[-1] else f"measured {times[0]} to {times[-1]}")
    return (", " + ", ".join(parts)) if parts else ""


_MARKS = "¹²³⁴⁵⁶⁷⁸⁹"


def merge_results(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` results with the rows of ``new`` replacing those of the same model and form; sorted."""
    key = (lambda r: (r["model"], r.get("form", "train")))  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return [merged[k] for k in sorted(merged)]


def markdown_table(results: list[dict], *, title: str | None = None) -> str:
    """A Markdown table of :func:`benchmark` results (params, GFLOPs, GMACs, latency, FPS).

    Rows timed under different settings or environments (e.g. merged from several runs) are
    marked ¹, ², ... and each group's timing note (with the load average and time recorded, when
    there are) is listed under the table.
    """
    notes: list[str] = []
    for r in results:
        note = _timing_note(r)
        if note and note not in notes:
            notes.append(note)
    lines = []
    if title:
        lines += [f"## {title}", ""]
    shape = "×".join(str(v) for v in results[0]["input_shape"]) if results else ""
    lines += [f"| model | heads | params | ref. params | GFLOPs @{shape} | GMACs | CPU latency median ms | CPU p90 ms |"
              " CPU FPS | GPU latency median / FPS |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        la = r.get("latency") or {}
        gpu = "not measured" if la.get("timer") != "cuda-events" else f"{la['median_ms']:.2f} ms / {la['fps']:.1f}"
        cpu_med = _fmt(la.get("median_ms"), ".0f") if la.get("timer") == "perf_counter" else "–"
        cpu_p90 = _fmt(la.get("p90_ms"), ".0f") if la.get("timer") == "perf_counter" else "–"
        cpu_fps = _fmt(la.get("fps"), ".3f") if la.get("timer") == "perf_counter" else "–"
        name = r["model"] + (" (deploy)" if r.get("form") == "deploy" else "")
        note = _timing_note(r)
        if len(notes) > 1 and note:
            name += _MARKS[notes.index(note) % len(_MARKS)]
        lines.append(f"| {name} | {r['heads']} | {r['params']:,} | "
                     f"{'–' if r.get('reference_params') is None else format(r['reference_params'], ',')} | "
                     f"{_fmt(r.get('gflops'), '.2f')} | {_fmt(r.get('gmacs'), '.2f')} | {cpu_med} | {cpu_p90} | "
                     f"{cpu_fps} | {gpu} |")
    footers = [n + _conditions([r for r in results if _timing_note(r) == n]) + "." for n in notes]
    if len(footers) == 1:
        lines += ["", f"Timing: {footers[0]}"]
    elif footers:
        lines += [""] + [f"Timing {_MARKS[i % len(_MARKS)]}: {f}" for i, f in enumerate(footers)]
    return "\n".join(lines) + "\n"
