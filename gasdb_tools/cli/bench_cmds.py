"""``gasdb bench``: the reference benchmark harness (models, train, eval, speed).

PyTorch is imported inside the commands only, so ``gasdb --help`` works without the ``bench``
extra; a command that needs it says how to install it.
"""

from __future__ import annotations

from pathlib import Path

import click

from gasdb_tools.cli._common import emit_json, fail, json_option, key_values

_INSTALL = "pip install 'gasdb-tools[bench]'"


def _require_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise click.ClickException(f"`gasdb bench` needs PyTorch, which is not installed: {_INSTALL}") from None


def _check_model(ctx, param, value):
    if value is None or value == "all" and param.name == "model_name" and ctx.info_name == "speed":
        return value
    _require_torch()
    from gasdb_tools.bench.registry import get_spec
    from gasdb_tools.errors import ModelError

    try:
        get_spec(value)
    except ModelError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def _parse_size(ctx, param, value):
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected HEIGHTxWIDTH such as 512x640, got {value!r}", ctx=ctx,
                                 param=param) from None
    return h, w


_model_arg = click.option("--model-arg", "model_args", multiple=True, callback=key_values, metavar="KEY=VALUE",
                          help="Extra model argument, e.g. spatial_attention=paper-intent (repeatable).")
_device = click.option("--device", default="auto", show_default=True,
                       help="auto (CUDA when available), cpu, cuda or cuda:N.")


@click.group()
def bench() -> None:
    """Reference benchmark harness: RT-CAN and baselines on Gas-DB (needs the bench extra).

    \b
    Example:
      gasdb bench models
      gasdb bench train --model rtcan-r50 --data release-1.0.0 --epochs 50 --device cuda
      gasdb bench eval --checkpoint runs/rtcan-r50/best.pt --data release-1.0.0
      gasdb bench speed --model rtcan-r50 --device cuda --amp
    """


@bench.command()
@click.option("--pattern", default="*", show_default=True, help="Shell-style filter on model names.")
@json_option
def models(pattern: str, as_json: bool) -> None:
    """List the registered models with their parameter counts (2 classes).

    Counts are exact (built on the meta device) and include unused parameters.

    \b
    Example:
      gasdb bench models --pattern 'rtcan*'
    """
    _require_torch()
    from gasdb_tools.bench.registry import count_parameters, get_spec, list_models

    rows = []
    for name in list_models(pattern):
        spec = get_spec(name)
        rows.append({"model": name, "params": count_parameters(name), "reference_params": spec.reference_params,
                     "heads": spec.heads, "fusion": spec.fusion, "input_multiple": spec.input_multiple,
                     "imagenet_depth": spec.imagenet_depth, "summary": spec.summary, "reference": spec.reference})
    if as_json:
        emit_json({"models": rows})
        return
    if not rows:
        fail(f"no model matches {pattern!r}")
    width = max(len(r["model"]) for r in rows)
    for r in rows:
        click.echo(f"{r['model']:<{width}}  {r['params']:>12,}  {r['summary']}")


@bench.command()
@click.option("--model", "model_name", callback=_check_model, help="Registry name (default: the config's, "
              "else rtcan-r50).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A JSON recipe, e.g. benchmarks/configs/rtcan-r50.json; options below override it.")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="Gas-DB folder, or a release folder (its gasdb/ subfolder).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder [default: runs/<model>].")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs [recipe: 50].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size per process [recipe: 4].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Initial learning rate [recipe: 0.02].")
@click.option("--seed", type=int, help="Seed [recipe: 3409].")
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader workers [4].")
@click.option("--size", callback=_parse_size, help="Resize every sample to HEIGHTxWIDTH [native].")
@click.option("--imagenet-weights", type=click.Path(dir_okay=False, exists=True),
              help="Local torchvision ResNet ImageNet .pth for the encoder(s) (nothing is downloaded).")
@click.option("--amp/--no-amp", default=None, help="CUDA AMP [recipe: on; ignored on CPU].")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from RUN/last.pt when it exists.")
@click.option("-f", "--force", is_flag=True, help="Start over, deleting the run folder's checkpoints and logs.")
@_model_arg
@_device
@json_option
def train(model_name, config_path, data, out, epochs, batch_size, lr, seed, workers, size, imagenet_weights, amp,
          resume, force, model_args, device, as_json) -> None:
    """Train a model with the RT-CAN recipe, selecting the checkpoint on a validation split.

    Writes RUN/config.json, log.jsonl, last.pt, best.pt, curves.png and test_metrics.json (the
    test split scored once, with the best validation epoch). Rerunning continues the run.
    Multi-GPU: torchrun --nproc_per_node N -m gasdb_tools bench train ...

    \b
    Example:
      gasdb bench train --config benchmarks/configs/rtcan-r50.json --data release-1.0.0 --device cuda
      gasdb bench train --model mfnet --data gasdb-folder --epochs 1 --device cpu
    """
    _require_torch()
    from gasdb_tools.bench.train import TrainConfig, load_config

    overrides = {"model": model_name, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                 "num_workers": workers, "size": list(size) if size else None, "imagenet_weights": imagenet_weights,
                 "amp": amp}
    if config_path is not None:
        config = load_config(config_path, **overrides)
    else:
        try:
            config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if model_args:
        config.model_kwargs = {**config.model_kwargs, **model_args}
    out = out or Path("runs") / config.model

    def show(record):
        if record["event"] == "epoch":
            v = record["val"]
            fmt = lambda x: "–" if x is None else f"{x:.4f}"  # noqa: E731
            click.echo(f"epoch {record['epoch']:>3}  lr {record['lr']:.5f}  loss {record['train_loss']:.4f}  "
                       f"val gas IoU {fmt(v.get('iou'))} Acc {fmt(v.get('acc'))} F2 {fmt(v.get('f2'))}"
                       f"{'  *best' if record['best'] else ''}  ({record['seconds']:.1f} s)", err=True)
        elif record["event"] == "start":
            click.echo(f"training {record['model']} ({record['params']:,} params) on {record['device']}: "
                       f"{record['n_train']} train / {record['n_val']} val ({record['val_source']}) / "
                       f"{record['n_test']} test", err=True)

    from gasdb_tools.bench.train import train as run_training

    summary = run_training(config, data, out, device=device, resume=resume, force=force,
                           log_fn=None if as_json else show)
    if as_json:
        emit_json({k: v for k, v in summary.items() if k != "history"})
        return
    best = summary["best"]
    click.echo(f"best epoch {best['epoch']} (val {best['metric']} {best['value']}); run folder {summary['out_dir']}")
    if summary["test"]:
        gas = summary["test"]["scores"]["sum"]["gas"]
        fmt = lambda x: "–" if x is None else f"{100 * x:.2f}"  # noqa: E731
        click.echo(f"test (scored once): gas Acc {fmt(gas['acc'])}  IoU {fmt(gas['iou'])}  F2 {fmt(gas['f2'])}")


@bench.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="best.pt / last.pt of a run, or a plain state dict (then give --model).")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="Gas-DB folder, or a release folder.")
@click.option("--model", "model_name", callback=_check_model, help="Registry name (needed for plain state dicts).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--heads", type=click.Choice(["all", "sum"]), default="all", show_default=True,
              help="all: also score each head on its own.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--amp", is_flag=True, help="fp16 autocast (CUDA only).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the metrics JSON here.")
@click.option("--count-ignore", is_flag=True, help="Score ignore pixels (the release's gasdb/ignore/) as background, "
                                                   "exactly as RT-CAN's official test.py; by default they are left out.")
@_model_arg
@_device
@json_option
def eval_cmd(checkpoint, data, model_name, split, heads, batch_size, workers, amp, out, count_ignore, model_args,
             device, as_json) -> None:
    """Score a checkpoint on a split with gasdb_tools.metrics (argmax of the summed heads).

    \b
    Example:
      gasdb bench eval --checkpoint runs/rtcan-r50/best.pt --data release-1.0.0 --out test.json
      gasdb bench eval --model rtcan-r50 --checkpoint 49_latest.pth --data gasdb-folder
    """
    _require_torch()
    from gasdb_tools.bench.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, data, split=split, model_name=model_name, model_kwargs=model_args or None,
                                 device=device, batch_size=batch_size, num_workers=workers, heads=heads, amp=amp,
                                 out=out, count_ignore=count_ignore)
    if as_json:
        emit_json(result)
        return
    fmt = lambda x: "–" if x is None else f"{100 * x:.2f}"  # noqa: E731
    click.echo(f"{result['model']} on {result['split']} ({result['n_images']} images), prediction "
               f"{result['prediction']}:")
    for key, s in result["scores"].items():
        g = s["gas"]
        click.echo(f"  {key:<6} gas Acc {fmt(g['acc'])}  IoU {fmt(g['iou'])}  F2 {fmt(g['f2'])}  "
                   f"P {fmt(g['precision'])}  mIoU {fmt(s['mean']['iou'])}")
    if out:
        click.echo(f"wrote {out}")


@bench.command()
@click.option("--model", "model_name", required=True, callback=_check_model,
              help="Registry name, or 'all' for every model.")
@click.option("--size", callback=_parse_size, default="512x640", show_default=True, help="Input HEIGHTxWIDTH.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--amp", is_flag=True, help="fp16 autocast on CUDA (bf16 on CPU); a labelled column.")
@click.option("--channels-last", is_flag=True, help="NHWC memory format.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile (compile time reported separately).")
@click.option("--warmup", type=click.IntRange(min=0), default=50, show_default=True, help="Warm-up iterations.")
@click.option("--warmup-s", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Minimum warm-up seconds.")
@click.option("--iters", type=click.IntRange(min=1), default=200, show_default=True, help="Timed iterations.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--tf32", is_flag=True, help="CUDA: allow TF32 in matmul and cuDNN (off: a true fp32 headline).")
@click.option("--cudnn-benchmark", is_flag=True, help="CUDA: cudnn.benchmark on (the warm-up absorbs the search).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads [torch's default].")
@click.option("--no-latency", is_flag=True, help="Only parameters and FLOPs.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the results JSON here.")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), help="Write a Markdown table here.")
@_model_arg
@_device
@json_option
def speed(model_name, size, batch, amp, channels_last, compile_, warmup, warmup_s, iters, repeats, tf32,
          cudnn_benchmark, threads, no_latency, out, markdown, model_args, device, as_json) -> None:
    """Parameters, FLOPs (GFLOPs and GMACs) and latency median/p90 and FPS of a model.

    GPU: CUDA events around each of ITERS forwards after warm-up; CPU: perf_counter, labelled CPU
    latency with the thread count and CPU model.

    \b
    Example:
      gasdb bench speed --model rtcan-r50 --device cuda
      gasdb bench speed --model all --device cpu --warmup 1 --warmup-s 0 --iters 3 --repeats 1 \\
          --out bench_models.json --markdown bench_models.md
    """
    _require_torch()
    import torch

    from gasdb_tools.bench.evaluate import resolve_device
    from gasdb_tools.bench.registry import list_models
    from gasdb_tools.bench.speed import benchmark, markdown_table
    from gasdb_tools.fsutil import atomic_write_text, write_json

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    names = list_models() if model_name == "all" else [model_name]
    results = []
    for name in names:
        r = benchmark(name, device=dev, shape=(batch, 4, *size), latency=not no_latency, model_kwargs=model_args,
                      warmup_iters=warmup, warmup_s=warmup_s, iters=iters, repeats=repeats, amp=amp,
                      channels_last=channels_last, compile=compile_, tf32=tf32, cudnn_benchmark=cudnn_benchmark)
        results.append(r)
        if not as_json:
            la = r.get("latency")
            lat = f"  {la['label']} median {la['median_ms']:.1f} ms  p90 {la['p90_ms']:.1f} ms  {la['fps']:.2f} FPS" \
                if la else ""
            click.echo(f"{name:<12} {r['params']:>12,} params  {r['gflops']:8.2f} GFLOPs  {r['gmacs']:8.2f} GMACs{lat}")
    if out:
        write_json(out, {"results": results})
    if markdown:
        atomic_write_text(markdown, markdown_table(results))
    if as_json:
        emit_json({"results": results})
