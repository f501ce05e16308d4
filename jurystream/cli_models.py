"""``jurystream models …``: bootstrap, export (bring your own), list, show, promote, rollback, eval.

Kept apart from ``cli.py`` so the model commands' imports (and their owners' edits) stay out
of the streaming roles; ``cli.py`` mounts this group as ``models``. Training and export import
torch lazily inside the commands, so ``--help`` and the registry commands stay fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from jurystream.cli_common import ConfigOpt, setting
from jurystream.config import Settings, Topic, load_settings
from jurystream.models.serving.kinds import MULTIHEAD, TRANSFORMER

models_app = typer.Typer(
    help="Jurors: bootstrap, export, registry (list/show/promote/rollback), evaluation.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # never break a path or message mid-line

RegistryOpt = Annotated[
    str | None,
    setting(
        "registry",
        "Registry path or fsspec URL (default <data_dir>/registry).",
        "--registry",
        metavar="PATH|URL",
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        metavar="DATASET",
        help="TweetEval dir, .jsonl, .csv or hub:NAME (default <data_root>/tweeteval/offensive).",
    ),
]
TextFieldOpt = Annotated[
    str, typer.Option(metavar="FIELD", help="Text field/column of JSONL/CSV data.")
]
LabelFieldOpt = Annotated[
    str, typer.Option(metavar="FIELD", help="Label field/column of JSONL/CSV data.")
]
DropEmptyOpt = Annotated[
    bool, typer.Option(help="Skip examples with an empty text instead of refusing the data.")
]
MinInt8Opt = Annotated[
    float,
    typer.Option(
        "--min-int8-agreement",
        metavar="0..1",
        min=0.0,
        max=1.0,
        help="Share of check texts where int8 must pick fp32's label to serve int8; "
        "below it the juror serves fp32 (slower, recorded in the manifest).",
    ),
]


def _settings(config: Path | None, registry: str | None = None) -> Settings:
    try:
        settings = load_settings(config)
    except Exception as exc:
        err.print(f"[red]error:[/] bad configuration: {exc}")
        raise typer.Exit(2) from exc
    if registry:
        settings = settings.model_copy(update={"registry": registry})
    return settings


def _registry(settings: Settings) -> Any:
    from jurystream.models.serving.registry import Registry

    return Registry(settings.registry_url)


def _data(
    settings: Settings,
    source: str | None,
    split: str,
    text_field: str,
    label_field: str,
    drop_empty: bool = False,
) -> Any:
    from jurystream.models.training.datasets import DatasetError, load_dataset, tweeteval_dir

    path = source or str(tweeteval_dir(settings.data_root, "offensive"))
    try:
        return load_dataset(path, split, text_field, label_field, drop_empty)
    except DatasetError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _announce(settings: Settings, reg: Any, name: str, version: str) -> None:
    """Tell running workers to swap to ``version`` (model-updates), if a broker is configured.

    Without one the registry still changed: workers serve it from their next start.
    """
    import asyncio

    from jurystream.stream.security import KafkaSecurityError, kafka_connection
    from jurystream.stream.updates import announce, model_update

    if not settings.broker.bootstrap:
        err.print(
            "no broker configured (JURYSTREAM_BROKER__BOOTSTRAP): not announced; running "
            "workers keep their version until they restart"
        )
        return
    try:
        kafka = kafka_connection(settings)
    except KafkaSecurityError as exc:
        raise _fail(exc) from exc
    asyncio.run(announce(settings, kafka, [model_update(reg, name, version)]))
    err.print(f"announced {name} v{version} on {settings.topics.name(Topic.MODEL_UPDATES)}")


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}")
    return typer.Exit(1)


@models_app.command()
def bootstrap(
    config: ConfigOpt = None,
    registry: RegistryOpt = None,
    data: DataOpt = None,
    split: Annotated[str, typer.Option(help="Split to draw the seed set from.")] = "train",
    eval_split: Annotated[
        str | None, typer.Option(help="Held-out split for metrics and checks ('' for none).")
    ] = "val",
    eval_data: Annotated[
        str | None, typer.Option(metavar="DATASET", help="Held-out data source (default: --data).")
    ] = None,
    holdout: Annotated[
        float,
        typer.Option(
            min=0.05,
            max=0.9,
            metavar="SHARE",
            help="When --data is one labeled file and no --eval-data is given: the stratified "
            "share of it held out for metrics and checks (a file has no val split).",
        ),
    ] = 0.2,
    seed_size: Annotated[int, typer.Option(help="Seed labels to train on (stratified).")] = 400,
    sample_seed: Annotated[int, typer.Option(help="Seed of the seed-set sample.")] = 0,
    jurors: Annotated[int, typer.Option(help="Fine-tuned transformer jurors.")] = 3,
    tfidf: Annotated[bool, typer.Option(help="Also train a TF-IDF + LR juror.")] = True,
    base: Annotated[
        Path | None, typer.Option(help="HF checkpoint to start from (default: offline MiniLM).")
    ] = None,
    prefix: Annotated[
        str, typer.Option(help="Name prefix of the transformer jurors.")
    ] = TRANSFORMER.family,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs (default 4: enough for a few hundred labels).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    text_field: TextFieldOpt = "text",
    label_field: LabelFieldOpt = "label",
    drop_empty: DropEmptyOpt = False,
    min_int8_agreement: MinInt8Opt = 0.98,
) -> None:
    """Train K diverse jurors from a few hundred labels, export, verify, register as serving.

    A juror that fails is reported and the others are still published (exit code 1).
    """
    from jurystream.exporters.onnx import ExportVerificationError
    from jurystream.models.serving.juror import ModelLoadError
    from jurystream.models.training.bootstrap import (
        BootstrapIncomplete,
        BootstrapPlan,
        bootstrap_jurors,
    )
    from jurystream.models.training.training import TrainConfig

    settings = _settings(config, registry)
    trainer = settings.trainer
    full = _data(settings, data, split, text_field, label_field, drop_empty)
    one_file = data is not None and not data.startswith("hub:") and not Path(data).is_dir()
    heldout = None
    if eval_split and one_file and eval_data is None:
        full, heldout = full.split_off(holdout, seed=sample_seed)
        err.print(f"held out {len(heldout)} rows of {data} for metrics and checks (--holdout)")
    elif eval_split:
        source = eval_data or data
        heldout = _data(settings, source, eval_split, text_field, label_field, drop_empty)
    seed = full.sample(seed_size, seed=sample_seed)
    plan = BootstrapPlan(
        transformers=jurors,
        tfidf=tfidf,
        base=base,
        prefix=prefix,
        min_agreement=min_int8_agreement,
        train=TrainConfig(
            epochs=epochs or TrainConfig().epochs,
            batch_size=batch_size or trainer.batch_size,
            learning_rate=learning_rate or TrainConfig().learning_rate,
            threads=threads or trainer.threads,
        ),
    )
    err.print(f"seed set: {seed.summary()}")
    try:
        results = bootstrap_jurors(
            seed, _registry(settings), plan, heldout=heldout, log=lambda m: err.print(m)
        )
    except BootstrapIncomplete as exc:
        for result in exc.published:
            print(f"{result.name}\t{result.version}")
        for name, why in exc.failures:
            err.print(f"[red]error:[/] {name} not published: {why}")
        err.print(
            f"{len(exc.published)} of {len(exc.published) + len(exc.failures)} jurors published"
        )
        raise typer.Exit(1) from exc
    except (ExportVerificationError, ModelLoadError, ValueError) as exc:
        raise _fail(exc) from exc
    for result in results:
        print(f"{result.name}\t{result.version}")


@models_app.command("bootstrap-multihead")
def bootstrap_multihead(
    task: Annotated[
        list[str],
        typer.Option(
            "--task",
            metavar="TASK",
            help="TweetEval task under <data_root>/tweeteval (repeat: --task offensive "
            "--task hate); the first is the juror's default head.",
        ),
    ],
    config: ConfigOpt = None,
    registry: RegistryOpt = None,
    name: Annotated[str, typer.Option(help="Juror name in the registry.")] = MULTIHEAD.family,
    size: Annotated[int, typer.Option(min=2, help="Seed labels per task (stratified).")] = 400,
    split: Annotated[str, typer.Option(help="Split to draw the seed sets from.")] = "train",
    eval_split: Annotated[
        str | None, typer.Option(help="Held-out split for metrics and checks ('' for none).")
    ] = "val",
    check_size: Annotated[int, typer.Option(help="Texts in the verification set.")] = 256,
    sample_seed: Annotated[int, typer.Option(help="Seed of the seed-set samples.")] = 0,
    base: Annotated[
        Path | None, typer.Option(help="Encoder checkpoint (default: offline MiniLM).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch and onnxruntime threads.")] = None,
    drop_empty: DropEmptyOpt = False,
    min_int8_agreement: MinInt8Opt = 0.98,
) -> None:
    """One juror for several tasks: a frozen encoder with a head per task, one ONNX model.

    Every post is encoded once and every head reads that encoding, so labeling four tasks
    costs about one transformer pass. Exported, verified and registered as serving.
    """
    from jurystream.exporters.onnx import ExportVerificationError
    from jurystream.models.serving.juror import ModelLoadError, precision_note
    from jurystream.models.training.datasets import tweeteval_dir
    from jurystream.models.training.multihead import bootstrap_multihead as build

    settings = _settings(config, registry)
    reg = _registry(settings)
    if len(set(task)) != len(task):
        raise _fail(ValueError(f"each --task once, please: {task}"))
    seeds, heldout = {}, {}
    for t in task:
        if not tweeteval_dir(settings.data_root, t).is_dir():
            root = tweeteval_dir(settings.data_root, "")
            there = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            err.print(
                f"[red]error:[/] no TweetEval task {t!r} under {root} "
                f"(there: {', '.join(there) or 'none'}); set JURYSTREAM_DATA_ROOT or --config"
            )
            raise typer.Exit(2)
        source = str(tweeteval_dir(settings.data_root, t))
        seeds[t] = _data(settings, source, split, "text", "label", drop_empty).sample(
            size, seed=sample_seed
        )
        if eval_split:
            heldout[t] = _data(settings, source, eval_split, "text", "label", drop_empty)
        err.print(f"{t}: {seeds[t].summary()}")
    try:
        version, metrics = build(
            seeds,
            reg,
            name=name,
            heldout=heldout,
            base=base,
            check_size=check_size,
            min_agreement=min_int8_agreement,
            threads=threads or settings.trainer.threads,
        )
    except (ExportVerificationError, ModelLoadError, ValueError) as exc:
        raise _fail(exc) from exc
    for t, report in metrics.items():
        err.print(
            f"{name} v{version} head {t}: accuracy {report['accuracy']:.3f}, "
            f"macro-F1 {report['macro_f1']:.3f} on {report['examples']} held-out texts"
        )
    note = precision_note(reg.manifest(name, version).extra)
    if note:
        err.print(f"[yellow]{name} v{version}:[/] {note}")
    print(f"{name}\t{version}")


@models_app.command("export")
def export_checkpoint(
    checkpoint: Annotated[
        Path, typer.Argument(help="Local HF sequence-classification checkpoint.")
    ],
    name: Annotated[str, typer.Option(help="Juror name in the registry.")],
    config: ConfigOpt = None,
    registry: RegistryOpt = None,
    check_data: Annotated[
        str | None,
        typer.Option(
            "--check-data",
            help="Texts to verify on: dataset as for --data (default: TweetEval offensive).",
        ),
    ] = None,
    check_split: Annotated[str, typer.Option(help="Split of the check data.")] = "val",
    check_size: Annotated[int, typer.Option(help="Texts in the verification set.")] = 256,
    quantize: Annotated[bool, typer.Option(help="Serve dynamic int8 (per-channel).")] = True,
    promote: Annotated[bool, typer.Option(help="Make it the serving version.")] = True,
    cost: Annotated[float, typer.Option(help="Relative cost per text (cascade order).")] = 1.0,
    max_length: Annotated[int, typer.Option(help="Token limit per text.")] = 128,
    text_field: TextFieldOpt = "text",
    label_field: LabelFieldOpt = "label",
    drop_empty: DropEmptyOpt = False,
    min_int8_agreement: MinInt8Opt = 0.98,
) -> None:
    """Bring your own juror: export + quantize + verify a checkpoint, then register it."""
    import tempfile

    from jurystream.exporters.onnx import ExportVerificationError, export_transformer
    from jurystream.models.serving.juror import ModelLoadError, precision_note

    settings = _settings(config, registry)
    check = _data(settings, check_data, check_split, text_field, label_field, drop_empty)
    reg = _registry(settings)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = export_transformer(
                checkpoint,
                Path(tmp) / name,
                name=name,
                version="0",
                check_texts=list(check.texts[:check_size]),
                quantize=quantize,
                cost=cost,
                max_length=max_length,
                min_agreement=min_int8_agreement,
                threads=settings.trainer.threads,
            )
            version = reg.publish(directory, name=name, promote=promote)
            note = precision_note(reg.manifest(name, version).extra)
    except (ExportVerificationError, ModelLoadError, FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from exc
    state = "serving" if promote else "not promoted"
    err.print(f"[green]registered[/] {name} v{version} ({state})")
    if note:
        err.print(f"[yellow]{name} v{version}:[/] {note}")
    print(f"{name}\t{version}")


@models_app.command("list")
def list_models(config: ConfigOpt = None, registry: RegistryOpt = None) -> None:
    """Every juror version in the registry; * marks the serving one."""
    settings = _settings(config, registry)
    rows = _registry(settings).list()
    table = Table(
        "juror", "version", "serving", "parent", "created", "precision", "accuracy", "macro-F1"
    )
    for r in rows:
        acc, f1 = r.metrics.get("accuracy"), r.metrics.get("macro_f1")
        table.add_row(
            r.name,
            r.version,
            "*" if r.serving else "",
            r.parent or "",
            r.created_at or "",
            r.precision,
            f"{acc:.3f}" if isinstance(acc, float) else "",
            f"{f1:.3f}" if isinstance(f1, float) else "",
        )
    out.print(table if rows else f"registry {settings.registry_url} is empty")


@models_app.command()
def show(
    name: Annotated[str, typer.Argument(help="Juror name.")],
    version: Annotated[str | None, typer.Option(help="Version (default: serving).")] = None,
    config: ConfigOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """A version's manifest as JSON (files, checksums, verification, training, metrics)."""
    from jurystream.models.serving.juror import ModelLoadError
    from jurystream.models.serving.registry import RegistryError

    reg = _registry(_settings(config, registry))
    try:
        manifest = reg.manifest(name, version)
    except (RegistryError, ModelLoadError) as exc:
        raise _fail(exc) from exc
    body = manifest.to_dict()
    body["serving"] = reg.serving_version(name) == manifest.version
    print(json.dumps(body, indent=2))


@models_app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Juror name.")],
    version: Annotated[str, typer.Argument(help="Version to serve.")],
    config: ConfigOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Serve ``version`` (after verifying it) and announce it; the old one can be rolled back to."""
    from jurystream.models.serving.juror import ModelLoadError
    from jurystream.models.serving.registry import RegistryError

    settings = _settings(config, registry)
    reg = _registry(settings)
    try:
        reg.promote(name, version)
    except (RegistryError, ModelLoadError) as exc:
        raise _fail(exc) from exc
    err.print(f"[green]{name} v{version} is serving[/]")
    _announce(settings, reg, name, version)


@models_app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Juror name.")],
    config: ConfigOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Serve the previously promoted version again; running workers swap back between batches."""
    from jurystream.models.serving.juror import ModelLoadError
    from jurystream.models.serving.registry import RegistryError

    settings = _settings(config, registry)
    reg = _registry(settings)
    try:
        version = reg.rollback(name)
    except (RegistryError, ModelLoadError) as exc:
        raise _fail(exc) from exc
    err.print(f"[green]{name} rolled back to v{version}[/]")
    _announce(settings, reg, name, version)


@models_app.command("eval")
def evaluate_models(
    config: ConfigOpt = None,
    registry: RegistryOpt = None,
    data: DataOpt = None,
    split: Annotated[str, typer.Option(help="Labeled split to evaluate on.")] = "val",
    juror: Annotated[
        list[str] | None,
        typer.Option("--juror", "-j", help="Juror dir or registry name (default: settings)."),
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Policy threshold.")] = None,
    calibrate: Annotated[
        float | None,
        typer.Option(help="Calibrate thresholds to this escalation rate and save them."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Thresholds file (default: jury.thresholds_file or <data_dir>/...)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    text_field: TextFieldOpt = "text",
    label_field: LabelFieldOpt = "label",
    drop_empty: DropEmptyOpt = False,
) -> None:
    """Accuracy, macro-F1, recall, confusion, ECE per juror and per policy; calibration."""
    from jurystream.models.rules.labelsets import LabelSetError, align_juror
    from jurystream.models.serving.juror import ModelLoadError, load_juror
    from jurystream.models.serving.registry import RegistryError, resolve_juror_dir
    from jurystream.models.serving.thresholds_file import write_thresholds
    from jurystream.models.training.evaluation import calibrate as run_calibration
    from jurystream.models.training.evaluation import evaluate

    settings = _settings(config, registry)
    specs = juror or settings.jury.jurors or _registry(settings).jurors()
    if not specs:
        err.print("[red]error:[/] no jurors: pass --juror or bootstrap some first")
        raise typer.Exit(2)
    labeled = _data(settings, data, split, text_field, label_field, drop_empty)
    try:
        jurors = [
            align_juror(
                load_juror(resolve_juror_dir(s, settings.registry_url), settings.jury.threads),
                labeled.label_names,
                f"juror {s} vs the data",
            )
            for s in specs
        ]
    except (RegistryError, ModelLoadError, LabelSetError) as exc:
        raise _fail(exc) from exc
    th = settings.jury.threshold if threshold is None else threshold
    report = evaluate(jurors, labeled.texts, labeled.labels, threshold=th)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if calibrate is not None:
        thresholds = run_calibration(
            jurors, labeled.texts, labeled.labels, calibrate, data_summary=labeled.summary()
        )
        target = output or settings.jury.thresholds_file or settings.data_dir / "thresholds.json"
        write_thresholds(target, thresholds)
        for policy, entry in thresholds["policies"].items():
            err.print(
                f"{policy}: threshold {entry['threshold']:.3f} → escalates "
                f"{entry['escalation_rate']:.1%}, "
                f"accepted accuracy {entry['accepted_accuracy']:.3f}"
            )
        err.print(f"[green]thresholds written to {os.fspath(target)}[/]")


def _print_report(report: dict[str, Any]) -> None:
    labels = report["labels"]
    jurors = Table(
        "juror", "version", "accuracy", "macro-F1", "ECE", *[f"recall {x}" for x in labels]
    )
    for name, r in report["jurors"].items():
        recalls = [r["per_class_recall"][x] for x in labels]
        jurors.add_row(
            name,
            r["version"],
            f"{r['accuracy']:.3f}",
            f"{r['macro_f1']:.3f}",
            f"{r['ece']:.3f}",
            *["-" if v is None else f"{v:.3f}" for v in recalls],
        )
    out.print(jurors)
    policies = Table(
        "policy", "threshold", "escalated", "accepted acc", "best-guess acc", "calls/text"
    )
    for name, p in report["policies"].items():
        policies.add_row(
            name,
            f"{p['threshold']:.2f}",
            f"{p['escalation_rate']:.1%}",
            f"{p['accepted_accuracy']:.3f}",
            f"{p['best_guess_accuracy']:.3f}",
            f"{p['juror_calls_per_text']:.2f}",
        )
    out.print(policies)


@models_app.command()
def bench(
    name: Annotated[str, typer.Argument(help="Transformer juror (registry name or directory).")],
    config: ConfigOpt = None,
    registry: RegistryOpt = None,
    data: DataOpt = None,
    split: Annotated[str, typer.Option(help="Split the texts come from.")] = "val",
    texts: Annotated[int, typer.Option(help="Texts per round.")] = 256,
    rounds: Annotated[int, typer.Option(help="Rounds per measurement (median).")] = 5,
    threads: Annotated[int, typer.Option(help="Threads for torch and onnxruntime.")] = 1,
    text_field: TextFieldOpt = "text",
    label_field: LabelFieldOpt = "label",
    drop_empty: DropEmptyOpt = False,
) -> None:
    """Throughput of PyTorch vs ONNX fp32 vs ONNX int8 at batch 1/8/32, as a markdown table."""
    from jurystream.bench.models import bench_juror, markdown
    from jurystream.models.serving.juror import ModelLoadError
    from jurystream.models.serving.registry import RegistryError, resolve_juror_dir

    settings = _settings(config, registry)
    sample = list(_data(settings, data, split, text_field, label_field, drop_empty).texts[:texts])
    try:
        directory = resolve_juror_dir(name, settings.registry_url)
        results = bench_juror(directory, sample, rounds=rounds, threads=threads)
    except (RegistryError, ModelLoadError, ValueError) as exc:
        raise _fail(exc) from exc
    print(markdown(name, results, len(sample), threads))
