"""``gasdb bench``: the reference benchmark harness (models, train, eval, speed, transfer, id-release).

PyTorch is imported inside the commands only, so ``gasdb --help`` works without the ``bench``
extra; a command that needs it says how to install it.
"""

from __future__ import annotations

from pathlib import Path

import click

from gasdb_tools.cli._common import emit_json, fail, json_option, key_values
from gasdb_tools.errors import GasdbError
from gasdb_tools.resources import bench_config, bench_configs

_INSTALL = "pip install 'gasdb-tools[bench]'"


def _require_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise click.ClickException(f"`gasdb bench` needs PyTorch, which is not installed: {_INSTALL}") from None


def _check_model(ctx, param, value):
    if value is None or (param.name == "model_name" and ctx.info_name == "speed" and (value == "all" or "*" in value)):
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


def _resolve_config(ctx, param, value):
    if value is None:
        return None
    try:
        return bench_config(value)
    except GasdbError as exc:
        raise click.BadParameter(f"{exc.message}; {exc.fix}", ctx=ctx, param=param) from None


_model_arg = click.option("--model-arg", "model_args", multiple=True, callback=key_values, metavar="KEY=VALUE",
                          help="Extra model argument, e.g. spatial_attention=paper-intent (repeatable).")
_device = click.option("--device", default="auto", show_default=True,
                       help="auto (CUDA when available), cpu, cuda or cuda:N.")


@click.group()
def bench() -> None:
    """Reference benchmark harness: RT-CAN and baselines on Gas-DB (needs the bench extra).

    Segmentation models train on a Gas-DB folder or release (or, for pretraining, a folder of
    smoke images + masks); gas-identification models (gas-1dcnn, gasnet, gas-fusion) on a release
    built by `gasdb bench id-release` from MultimodalGasData.

    \b
    Example:
      gasdb bench models
      gasdb bench train --model rtcan-r50 --data release-1.0.0 --epochs 50 --device cuda
      gasdb bench eval --checkpoint runs/rtcan-r50/best.pt --data release-1.0.0
      gasdb bench speed --model rsfnet-50-18 --deploy --device cuda --amp
      gasdb bench transfer --smoke smoke-data --data release-1.0.0 --out runs/unet-transfer
      gasdb bench id-release MultimodalGasData gasid-release
      gasdb bench train --model gas-1dcnn --data gasid-release --device cpu
    """


@bench.command()
@click.option("--pattern", default="*", show_default=True, help="Shell-style filter on model names.")
@click.option("--task", type=click.Choice(["segmentation", "identification"]), help="Only models of this task.")
@json_option
def models(pattern: str, task: str | None, as_json: bool) -> None:
    """List the registered models with their parameter counts.

    Counts are exact (built on the meta device) and include unused parameters: 2 classes for
    segmentation models (training form; RSFNet's deploy form in deploy_params), 4 for
    identification models.

    \b
    Example:
      gasdb bench models --pattern 'rtcan*'
      gasdb bench models --task identification
    """
    _require_torch()
    from gasdb_tools.bench.registry import count_parameters, get_spec, list_models
    from gasdb_tools.bench.speed import has_deploy_form

    rows = []
    for name in list_models(pattern, task=task):
        spec = get_spec(name)
        n_class = 4 if spec.task == "identification" else 2
        deploy = count_parameters(name, deploy=True) if spec.task == "segmentation" and has_deploy_form(name) else None
        rows.append({"model": name, "task": spec.task, "modalities": list(spec.modalities), "n_class": n_class,
                     "params": count_parameters(name, n_class=n_class), "deploy_params": deploy,
                     "reference_params": spec.reference_params, "heads": spec.heads, "fusion": spec.fusion,
                     "input_multiple": spec.input_multiple, "imagenet_depth": spec.imagenet_depth,
                     "summary": spec.summary, "reference": spec.reference})
    if as_json:
        emit_json({"models": rows})
        return
    if not rows:
        fail(f"no model matches {pattern!r}")
    width = max(len(r["model"]) for r in rows)
    for r in rows:
        deploy = f" (deploy form {r['deploy_params']:,})" if r["deploy_params"] else ""
        click.echo(f"{r['model']:<{width}}  {r['params']:>12,}  {r['summary']}{deploy}")


def _task_of(config_path, model_name) -> str:
    import json

    if model_name:
        from gasdb_tools.bench.registry import get_spec

        return get_spec(model_name).task
    if config_path:
        try:
            data = json.loads(Path(config_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "segmentation"  # load_config reports the problem
        if isinstance(data, dict):
            if data.get("task") == "identification":
                return "identification"
            if isinstance(data.get("model"), str):
                from gasdb_tools.bench.registry import get_spec
                from gasdb_tools.errors import ModelError

                try:
                    return get_spec(data["model"]).task
                except ModelError:
                    return "segmentation"
    return "segmentation"


def _fmt_pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _show_classification(scores: dict) -> None:
    classes = scores["classes"]
    click.echo(f"  accuracy {_fmt_pct(scores['accuracy'])} %  macro F1 {_fmt_pct(scores['macro_f1'])} %  "
               f"({scores['n']} samples)")
    width = max(len(c) for c in classes)
    click.echo("  confusion matrix (rows truth, columns prediction): " + "  ".join(classes))
    for name, row in zip(classes, scores["confusion_matrix"]):
        per = scores["per_class"][name]
        click.echo(f"    {name:<{width}}  " + " ".join(f"{v:>6}" for v in row)
                   + f"   P {_fmt_pct(per['precision'])}  R {_fmt_pct(per['recall'])}  F1 {_fmt_pct(per['f1'])}")


@bench.command()
@click.option("--model", "model_name", callback=_check_model, help="Registry name (default: the config's, "
              "else rtcan-r50).")
@click.option("--config", "config_path", callback=_resolve_config, metavar="NAME|FILE",
              help="A JSON recipe file, or the name of one shipped with gasdb ("
                   + ", ".join(bench_configs()) + "); options below override it.")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="Gas-DB folder or release (its gasdb/ subfolder), a smoke images + masks folder, or (for "
                   "identification models) an identification release.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder [default: runs/<model>].")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs [recipe: 50].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size per process [recipe: 4].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Initial learning rate [recipe: 0.02].")
@click.option("--seed", type=int, help="Seed [recipe: 3409].")
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader workers [4].")
@click.option("--size", callback=_parse_size, help="Resize every sample to HEIGHTxWIDTH [native; identification: "
              "the thermal images, recipe 224x224].")
@click.option("--imagenet-weights", type=click.Path(dir_okay=False, exists=True),
              help="Local torchvision ResNet ImageNet .pth for the encoder(s) (nothing is downloaded).")
@click.option("--init-from", type=click.Path(dir_okay=False, exists=True),
              help="Initialise from a checkpoint of any registered model (best.pt/last.pt or a state dict): "
                   "matching names and shapes load, the rest is reported.")
@click.option("--init-strict", is_flag=True, default=None, help="With --init-from: refuse anything but an exact fit.")
@click.option("--data-format", type=click.Choice(["auto", "gasdb", "smoke"]), help="Segmentation data layout "
              "[auto].")
@click.option("--amp/--no-amp", default=None, help="CUDA AMP [recipe: on; ignored on CPU].")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from RUN/last.pt when it exists.")
@click.option("-f", "--force", is_flag=True, help="Start over, deleting the run folder's checkpoints and logs.")
@_model_arg
@_device
@json_option
def train(model_name, config_path, data, out, epochs, batch_size, lr, seed, workers, size, imagenet_weights, init_from,
          init_strict, data_format, amp, resume, force, model_args, device, as_json) -> None:
    """Train a model, selecting the checkpoint on a validation split; test is scored once.

    Segmentation models follow the RT-CAN recipe (RSFNet adds its confidence loss); --init-from
    starts from another run's weights (partial loading reported in RUN/init_report.json).
    Identification models train on an identification release with accuracy / macro F1.
    Writes RUN/config.json, log.jsonl, last.pt, best.pt, curves.png and test_metrics.json.
    Rerunning continues the run. Multi-GPU: torchrun --nproc_per_node N -m gasdb_tools bench train ...

    \b
    Example:
      gasdb bench train --config rtcan-r50 --data release-1.0.0 --device cuda
      gasdb bench train --model mfnet --data gasdb-folder --epochs 1 --device cpu
      gasdb bench train --model unet-r18 --data release-1.0.0 --init-from runs/smoke/best.pt
      gasdb bench train --config gas-1dcnn --data gasid-release --device cpu
    """
    _require_torch()
    if _task_of(config_path, model_name) == "identification":
        seg_only = {"--imagenet-weights": imagenet_weights, "--init-from": init_from, "--init-strict": init_strict,
                    "--data-format": data_format, "--amp/--no-amp": amp}
        given = [k for k, v in seg_only.items() if v is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to segmentation models only")
        _train_identification(model_name, config_path, data, out, epochs, batch_size, lr, seed, workers, size,
                              resume, force, model_args, device, as_json)
        return
    from gasdb_tools.bench.train import TrainConfig

    overrides = {"model": model_name, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                 "num_workers": workers, "size": list(size) if size else None, "imagenet_weights": imagenet_weights,
                 "amp": amp, "init_from": init_from, "init_strict": init_strict, "data_format": data_format}
    config = _training_config(TrainConfig, config_path, overrides, model_args)
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
    init = summary.get("init")
    if init:
        click.echo(f"initialised from {init['source']}: {init['loaded']} tensors ({init['loaded_params']:,} of "
                   f"{init['total_params']:,} parameters); {len(init['missing'])} missing, "
                   f"{len(init['unexpected'])} unexpected, {len(init['shape_mismatch'])} with another shape "
                   f"(RUN/init_report.json)")
    click.echo(f"best epoch {best['epoch']} (val {best['metric']} {best['value']}); run folder {summary['out_dir']}")
    if summary["test"]:
        gas = summary["test"]["scores"]["sum"]["gas"]
        fmt = lambda x: "–" if x is None else f"{100 * x:.2f}"  # noqa: E731
        click.echo(f"test (scored once): gas Acc {fmt(gas['acc'])}  IoU {fmt(gas['iou'])}  F2 {fmt(gas['f2'])}")


def _train_identification(model_name, config_path, data, out, epochs, batch_size, lr, seed, workers, size, resume,
                          force, model_args, device, as_json) -> None:
    from gasdb_tools.bench.identify import IdentifyConfig, train_identification

    overrides = {"model": model_name, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                 "num_workers": workers, "thermal_size": list(size) if size else None}
    config = _training_config(IdentifyConfig, config_path, overrides, model_args)
    out = out or Path("runs") / config.model

    def show(record):
        if record["event"] == "epoch":
            v = record["val"]
            click.echo(f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  val acc "
                       f"{_fmt_pct(v.get('accuracy'))}  macro F1 {_fmt_pct(v.get('macro_f1'))}"
                       f"{'  *best' if record['best'] else ''}  ({record['seconds']:.1f} s)", err=True)
        elif record["event"] == "start":
            variant = f", variant {record['variant']}" if record["variant"] else ""
            click.echo(f"training {record['model']} ({record['params']:,} params, {'+'.join(record['modalities'])}"
                       f"{variant}) on {record['device']}: {record['n_train']} train / {record['n_val']} val / "
                       f"{record['n_test']} test", err=True)

    summary = train_identification(config, data, out, device=device, resume=resume, force=force,
                                   log_fn=None if as_json else show)
    if as_json:
        emit_json({k: v for k, v in summary.items() if k != "history"})
        return
    best = summary["best"]
    click.echo(f"best epoch {best['epoch']} (val {best['metric']} {best['value']}); run folder {summary['out_dir']}")
    if summary["test"]:
        click.echo("test (scored once):")
        _show_classification(summary["test"]["scores"])


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
@click.option("--deploy", is_flag=True, help="Score the re-parameterised inference form (RSFNet).")
@click.option("--data-format", type=click.Choice(["auto", "gasdb", "smoke"]),
              help="Segmentation data layout [the run's, else auto].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the metrics JSON here.")
@click.option("--count-ignore", is_flag=True, help="Score ignore pixels (the release's gasdb/ignore/) as background, "
                                                   "exactly as RT-CAN's official test.py; by default they are left out.")
@_model_arg
@_device
@json_option
def eval_cmd(checkpoint, data, model_name, split, heads, batch_size, workers, amp, deploy, data_format, out,
             count_ignore, model_args, device, as_json) -> None:
    """Score a checkpoint on a split: segmentation with gasdb_tools.metrics (argmax of the summed
    heads; ignore pixels left out unless --count-ignore), identification with accuracy, macro F1
    and the confusion matrix.

    \b
    Example:
      gasdb bench eval --checkpoint runs/rtcan-r50/best.pt --data release-1.0.0 --out test.json
      gasdb bench eval --model rtcan-r50 --checkpoint 49_latest.pth --data gasdb-folder
      gasdb bench eval --checkpoint runs/rsfnet-50-18/best.pt --data release-1.0.0 --deploy
      gasdb bench eval --checkpoint runs/gas-1dcnn/best.pt --data gasid-release --split val
    """
    _require_torch()
    from gasdb_tools.bench.evaluate import evaluate_checkpoint
    from gasdb_tools.bench.identify import evaluate_identification, is_id_checkpoint

    if is_id_checkpoint(checkpoint):
        result = evaluate_identification(checkpoint, data, split=split, device=device, batch_size=max(batch_size, 1),
                                         num_workers=workers, out=out)
        if as_json:
            emit_json(result)
            return
        variant = f", variant {result['variant']}" if result["variant"] else ""
        click.echo(f"{result['model']} ({'+'.join(result['modalities'])}{variant}) on {result['split']} "
                   f"({result['n_samples']} samples):")
        _show_classification(result["scores"])
        if out:
            click.echo(f"wrote {out}")
        return
    result = evaluate_checkpoint(checkpoint, data, split=split, model_name=model_name, model_kwargs=model_args or None,
                                 device=device, batch_size=batch_size, num_workers=workers, heads=heads, amp=amp,
                                 out=out, data_format=data_format, deploy=deploy, count_ignore=count_ignore)
    if as_json:
        emit_json(result)
        return
    fmt = lambda x: "–" if x is None else f"{100 * x:.2f}"  # noqa: E731
    form = " (deploy form)" if result["form"] == "deploy" else ""
    click.echo(f"{result['model']}{form} on {result['split']} ({result['n_images']} images), prediction "
               f"{result['prediction']}:")
    for key, s in result["scores"].items():
        g = s["gas"]
        click.echo(f"  {key:<6} gas Acc {fmt(g['acc'])}  IoU {fmt(g['iou'])}  F2 {fmt(g['f2'])}  "
                   f"P {fmt(g['precision'])}  mIoU {fmt(s['mean']['iou'])}")
    if out:
        click.echo(f"wrote {out}")


@bench.command()
@click.option("--model", "model_name", required=True, callback=_check_model,
              help="Registry name, a shell pattern ('rsfnet*'), or 'all' for every segmentation model.")
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
@click.option("--deploy", is_flag=True, help="The re-parameterised inference form (RSFNet); with --model all, "
              "deploy-form rows are added for the models that have one.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the results JSON here.")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), help="Write a Markdown table here.")
@click.option("--merge", is_flag=True, help="Keep the other rows of an existing --out JSON, replacing those of the "
              "models (and forms) measured now; the table marks rows timed in different runs.")
@_model_arg
@_device
@json_option
def speed(model_name, size, batch, amp, channels_last, compile_, warmup, warmup_s, iters, repeats, tf32,
          cudnn_benchmark, threads, no_latency, deploy, out, markdown, merge, model_args, device, as_json) -> None:
    """Parameters, FLOPs (GFLOPs and GMACs) and latency median/p90 and FPS of a segmentation model.

    GPU: CUDA events around each of ITERS forwards after warm-up; CPU: perf_counter, labelled CPU
    latency with the thread count and CPU model.

    \b
    Example:
      gasdb bench speed --model rtcan-r50 --device cuda
      gasdb bench speed --model rsfnet-50-18 --deploy --device cpu
      gasdb bench speed --model all --deploy --device cpu --warmup 1 --warmup-s 0 --iters 3 --repeats 1 \\
          --out bench_models.json --markdown bench_models.md
      gasdb bench speed --model 'rsfnet*' --deploy --merge --out bench_models.json --markdown bench_models.md
    """
    _require_torch()
    import torch

    from gasdb_tools.bench.evaluate import resolve_device
    from gasdb_tools.bench.registry import get_spec, list_models
    from gasdb_tools.bench.speed import benchmark, has_deploy_form, markdown_table, merge_results
    from gasdb_tools.fsutil import atomic_write_text, write_json

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if merge and not out:
        raise click.UsageError("--merge needs --out (the JSON to merge into)")
    if model_name == "all" or "*" in model_name:
        names = list_models("*" if model_name == "all" else model_name, task="segmentation")
        if not names:
            raise click.BadParameter(f"no segmentation model matches {model_name!r}", param_hint="--model")
        runs = [(n, False) for n in names]
        if deploy:
            runs += [(n, True) for n in names if has_deploy_form(n)]
            runs.sort()
    else:
        if get_spec(model_name).task != "segmentation":
            raise click.BadParameter(f"{model_name} is an identification model; speed times segmentation models",
                                     param_hint="--model")
        if deploy and not has_deploy_form(model_name):
            raise click.BadParameter(f"{model_name} has no deploy form", param_hint="--deploy")
        runs = [(model_name, deploy)]
    results = []
    for name, dep in runs:
        r = benchmark(name, device=dev, shape=(batch, 4, *size), latency=not no_latency, model_kwargs=model_args,
                      deploy=dep, warmup_iters=warmup, warmup_s=warmup_s, iters=iters, repeats=repeats, amp=amp,
                      channels_last=channels_last, compile=compile_, tf32=tf32, cudnn_benchmark=cudnn_benchmark)
        results.append(r)
        if not as_json:
            la = r.get("latency")
            lat = f"  {la['label']} median {la['median_ms']:.1f} ms  p90 {la['p90_ms']:.1f} ms  {la['fps']:.2f} FPS" \
                if la else ""
            label = name + (" (deploy)" if dep else "")
            click.echo(f"{label:<22} {r['params']:>12,} params  {r['gflops']:8.2f} GFLOPs  {r['gmacs']:8.2f} GMACs"
                       f"{lat}")
    if merge and Path(out).is_file():
        from gasdb_tools.errors import ModelError
        from gasdb_tools.fsutil import read_json

        old = read_json(out, error=ModelError)
        results = merge_results(old.get("results", []) if isinstance(old, dict) else [], results)
    if out:
        write_json(out, {"results": results})
    if markdown:
        atomic_write_text(markdown, markdown_table(results))
    if as_json:
        emit_json({"results": results})


@bench.command()
@click.option("--smoke", "smoke_data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Smoke images + masks folder (images/ + masks/, or train/images + train/masks).")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="Gas data: a Gas-DB folder or release.")
@click.option("--model", "model_name", callback=_check_model, help="Registry name for both stages [unet-r18].")
@click.option("--pretrain-config", callback=_resolve_config,
              help="Stage-1 recipe: a shipped recipe name (unet-r18-smoke-pretrain) or a JSON file.")
@click.option("--config", "config_path", callback=_resolve_config,
              help="Stage-2 recipe: a shipped recipe name (unet-r18-smoke-transfer) or a JSON file.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: OUT/smoke, OUT/gas, OUT/transfer.json.")
@click.option("--pretrain-epochs", type=click.IntRange(min=1), help="Stage-1 epochs [recipe].")
@click.option("--epochs", type=click.IntRange(min=1), help="Stage-2 epochs [recipe].")
@click.option("--size", callback=_parse_size, help="Resize every sample to HEIGHTxWIDTH in both stages.")
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader workers.")
@click.option("--init-strict", is_flag=True, help="Refuse unless the smoke weights fit the gas model exactly.")
@click.option("--imagenet-weights", type=click.Path(dir_okay=False, exists=True),
              help="Local ImageNet .pth for stage 1's encoder.")
@click.option("-f", "--force", is_flag=True, help="Start both stages over.")
@_device
@json_option
def transfer(smoke_data, data, model_name, pretrain_config, config_path, out, pretrain_epochs, epochs, size, workers,
             init_strict, imagenet_weights, force, device, as_json) -> None:
    """Smoke -> gas transfer: pretrain on visible smoke, fine-tune on gas from the smoke weights.

    Stage 1 trains on SMOKE (data_format smoke; the thermal slot holds the image's luma),
    stage 2 on DATA initialised from OUT/smoke/best.pt (partial loading reported). Rerunning
    resumes both stages.

    \b
    Example:
      gasdb bench transfer --smoke smoke-data --data release-1.0.0 --out runs/unet-transfer \\
          --pretrain-config unet-r18-smoke-pretrain \\
          --config unet-r18-smoke-transfer --device cuda
    """
    _require_torch()
    from gasdb_tools.bench.train import TrainConfig, load_config
    from gasdb_tools.bench.train import transfer as run_transfer

    common = {"num_workers": workers, "size": list(size) if size else None}
    pre_over = {**common, "model": model_name, "epochs": pretrain_epochs, "imagenet_weights": imagenet_weights}
    fine_over = {**common, "model": model_name, "epochs": epochs, "init_strict": init_strict or None}
    try:
        pre = load_config(pretrain_config, **pre_over) if pretrain_config else TrainConfig(
            **{"model": "unet-r18", **{k: v for k, v in pre_over.items() if v is not None}, "data_format": "smoke"})
        fine = load_config(config_path, **fine_over) if config_path else TrainConfig(
            **{"model": pre.model, **{k: v for k, v in fine_over.items() if v is not None}})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    def show(record):
        if record["event"] == "start":
            click.echo(f"{record['data_format']} stage: {record['model']} on {record['data']} "
                       f"({record['n_train']} train / {record['n_val']} val / {record['n_test']} test)", err=True)
        elif record["event"] == "epoch":
            v = record["val"]
            fmt = lambda x: "–" if x is None else f"{x:.4f}"  # noqa: E731
            click.echo(f"  epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  val IoU {fmt(v.get('iou'))}"
                       f"{'  *best' if record['best'] else ''}", err=True)

    result = run_transfer(pre, fine, smoke_data, data, out, device=device, force=force,
                          log_fn=None if as_json else show)
    if as_json:
        emit_json(result)
        return
    init = result["init"]
    click.echo(f"gas model initialised from the smoke run: {init['loaded']} tensors ({init['loaded_params']:,} of "
               f"{init['total_params']:,} parameters), {init['missing']} missing, {init['unexpected']} unexpected, "
               f"{init['shape_mismatch']} with another shape")
    for stage in ("smoke", "gas"):
        test = result[stage]["test"]
        if test:
            g = test["scores"]["sum"]["gas"]
            click.echo(f"{stage:<5} test (scored once): class-1 IoU {_fmt_pct(g['iou'])}  Acc {_fmt_pct(g['acc'])}  "
                       f"F2 {_fmt_pct(g['f2'])}")
    click.echo(f"wrote {Path(out) / 'transfer.json'}")


@bench.command("id-release")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--thermal", type=click.Choice(["auto", "copy", "none"]), default="auto", show_default=True,
              help="Copy the thermal images (copy: required; auto: when the folder exists) or build sensors only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the 70/10/20 split of a single CSV.")
@click.option("-f", "--force", is_flag=True, help="Rebuild although OUT holds a release.")
@json_option
def id_release(source, out, thermal, seed, force, as_json) -> None:
    """Build a gas-identification release OUT from a MultimodalGasData copy SOURCE.

    Reads the sensor CSV(s) (Gas_Sensors_Measurements.csv, or v3's _train/_validation/_test
    files) and the 'Thermal Camera Images/<class>/' folders; writes manifest.json, sensors.csv,
    train/val/test.txt and thermal/<class>/*.png (see gasdb_tools.bench.gasid). Rerunning on the
    same source is a no-op.

    \b
    Example:
      gasdb bench id-release "Multimodal Dataset for Gas Detection and Classification" gasid-release
      gasdb bench id-release MultimodalGasData-v3/MultimodalGasDataset gasid-v3 --thermal none
    """
    from gasdb_tools.bench.gasid import build_id_release

    manifest = build_id_release(source, out, thermal=thermal, seed=seed, force=force)
    if as_json:
        emit_json(manifest)
        return
    state = "up to date" if manifest.get("up_to_date") else "written"
    splits = ", ".join(f"{k} {v}" for k, v in manifest["splits"].items())
    click.echo(f"{out}: {state}; {manifest['n_samples']} samples ({splits}), classes {', '.join(manifest['classes'])}, "
               f"thermal images: {'yes' if manifest['thermal'] else 'no'}; split: {manifest['split_source']}")


def _training_config(cls, config_path, overrides: dict, model_args: dict):
    """A training config: the file's (``--config``, its task deciding the class) or ``cls``'s defaults,
    with the options given on the command line on top, and ``--model-arg`` values merged in."""
    from gasdb_tools.bench.train import load_config

    if config_path is not None:
        config = load_config(config_path, **overrides)
    else:
        try:
            config = cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if model_args:
        config.model_kwargs = {**config.model_kwargs, **model_args}
    return config
