"""One training run, start to finish: split -> fit -> evaluate (model and baselines) -> run directory.

A run directory holds everything needed to reuse or audit the run:

    config.json          the experiment config, the data it saw (store version, counts) and the split
    model/               config.json + model.safetensors (JSON and safetensors only, never pickle)
    vocab/items.parquet  item index -> item id (index 0 is padding); vocab/users.parquet likewise
    metrics.json         test (and validation) metrics of the model and of the baselines
    train_log.csv        one row per epoch (neural models)
    report.html          plots: loss and validation curves, metrics against the baselines
"""

from __future__ import annotations

import csv
import inspect
import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shopseq.atomic import replace_dir, temp_sibling
from shopseq.data.attributes import ItemAttributes
from shopseq.data.sequences import Sequences
from shopseq.data.splits import GlobalTimeSplit, LeaveOneOutSplit, Split
from shopseq.evaluation import EvalConfig, EvalResult, evaluate
from shopseq.models.base import ModelConfig, Recommender
from shopseq.models.features import with_attributes
from shopseq.models.registry import build_model, default_config, load_model, model_class
from shopseq.reports.html import HtmlReport
from shopseq.training.distributed import init_from_env

RUN_FORMAT = 1


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["time", "loo"] = "time"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1

    def make(self, seqs: Sequences) -> Split:
        if self.method == "loo":
            return LeaveOneOutSplit().split(seqs)
        return GlobalTimeSplit(valid_fraction=self.valid_fraction, test_fraction=self.test_fraction).split(seqs)


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: dict[str, Any] = Field(default_factory=lambda: {"model": "sasrec"})
    split: SplitConfig = Field(default_factory=SplitConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    baselines: list[str] = Field(default_factory=lambda: ["pop", "markov"])
    seed: int = 0


class RunResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())
    run_dir: Path
    test: dict[str, float]
    valid: dict[str, float]
    baselines: dict[str, dict[str, float]]
    train_seconds: float
    eval_seconds: float
    protocol: str


def model_from_dict(spec: dict[str, Any], seed: int | None = None) -> ModelConfig:
    """A model's typed config from ``{"model": name, **overrides}``; ``seed`` goes where the model
    keeps its seed (its own field, or its training config), unless the overrides set it; a blend's
    members get it each."""
    name = spec.get("model", "sasrec")
    overrides = {k: v for k, v in spec.items() if k != "model"}
    fields = model_class(name).config_class.model_fields
    if "members" in fields and isinstance(overrides.get("members"), list):
        overrides["members"] = [model_from_dict(m, seed) if isinstance(m, dict) else m for m in overrides["members"]]
    if seed is not None:
        if "seed" in fields:
            overrides.setdefault("seed", seed)
        elif "train" in fields:
            overrides["train"] = {"seed": seed, **overrides.get("train", {})}
    return default_config(name, **overrides)


def fit_and_evaluate(
    model: Recommender, split: Split, eval_config: EvalConfig, checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> tuple[EvalResult, EvalResult, float] | None:
    """Fit, then evaluate on test and validation; None on torchrun ranks other than 0.

    Models that early-stop are validated under the run's own protocol (seen items filtered or
    kept, as ``eval_config`` says), so the epoch kept is the best one by the measure reported."""
    started = time.perf_counter()
    params = inspect.signature(model.fit).parameters
    extra: dict[str, Any] = {}
    if "validate" in params:
        valid_config = EvalConfig(ks=(10,), filter_seen=eval_config.filter_seen, target=eval_config.target)
        extra["validate"] = lambda: {k: float(v) for k, v in evaluate(model, split.valid, valid_config).metrics.items()}
    if checkpoint_dir is not None and "checkpoint_dir" in params:
        extra |= {"checkpoint_dir": checkpoint_dir, "resume": resume}
    model.fit(split.train, split.valid, **extra)
    train_seconds = time.perf_counter() - started
    if not init_from_env().is_main:
        return None
    return evaluate(model, split.test, eval_config), evaluate(model, split.valid, eval_config), train_seconds


def run_experiment(
    seqs: Sequences,
    config: ExperimentConfig,
    out_dir: Path,
    data_info: dict[str, Any] | None = None,
    log: Any = print,
    resume: bool = False,
    attributes: ItemAttributes | None = None,
) -> RunResult | None:
    """Train and evaluate ``config.model`` and its baselines on one split; write the run directory.

    Neural models checkpoint every epoch to ``<out_dir>.checkpoints``; ``resume=True`` continues
    from there after an interruption. The checkpoints are removed once the run directory is written.
    With ``attributes`` (from ``shopseq.data.attributes.item_attributes``) a model that reads event
    features gets the item attribute tokens too; the matrix is saved with its weights.
    Under torchrun every rank trains its share; only rank 0 evaluates and writes (others get None).
    """
    split = config.split.make(seqs)
    log(split.describe())
    spec = config.model
    if spec.get("model") == "blend":  # the mixture weights are chosen under the run's own protocol
        spec = {"filter_seen": config.eval.filter_seen, **spec}
    model_config = model_from_dict(spec, config.seed)
    if attributes is not None:
        model_config = with_attributes(model_config, attributes)
    model = build_model(model_config, seqs.n_items)
    if attributes is not None:
        model.set_item_attributes(attributes)  # type: ignore[attr-defined]
        log(f"item attributes: {attributes.n_tokens:,} tokens on {attributes.coverage():.0%} of items")
    log(f"training {model.name} ...")
    checkpoints = checkpoint_dir(Path(out_dir))
    fitted = fit_and_evaluate(model, split, config.eval, checkpoints, resume)
    if fitted is None:
        return None
    test, valid, train_seconds = fitted
    log(f"{model.name}: {test.headline()}")
    baseline_results: dict[str, EvalResult] = {}
    for name in config.baselines:
        if name == model.name:
            continue
        base = build_model(default_config(name), seqs.n_items)
        base_test, _, _ = fit_and_evaluate(base, split, config.eval)  # type: ignore[misc]  # rank 0 here
        baseline_results[name] = base_test
        log(f"{name}: {base_test.headline()}")

    result = RunResult(
        run_dir=Path(out_dir), test=test.metrics, valid=valid.metrics,
        baselines={k: v.metrics for k, v in baseline_results.items()},
        train_seconds=train_seconds, eval_seconds=test.seconds, protocol=config.eval.protocol(),
    )
    write_run_dir(Path(out_dir), model, seqs, config, split, result, data_info or {})
    shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir.with_name(f"{run_dir.name}.checkpoints")


def write_run_dir(
    out_dir: Path, model: Recommender, seqs: Sequences, config: ExperimentConfig, split: Split,
    result: RunResult, data_info: dict[str, Any],
) -> Path:
    """Everything under a temp folder, renamed into place: a crash never leaves half a run, and the
    previous run at ``out_dir`` stays loadable until the new one is complete."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out_dir)
    tmp.mkdir()
    model.save(tmp / "model")
    (tmp / "vocab").mkdir()
    seqs.item_vocab.save(tmp / "vocab" / "items.parquet")
    seqs.user_vocab.save(tmp / "vocab" / "users.parquet")
    meta = {
        "run_format": RUN_FORMAT,
        "experiment": config.model_dump(mode="json"),
        "model_config": model.config.model_dump(mode="json"),
        "data": data_info,
        "split": split.summary(),
        "protocol": result.protocol,
    }
    (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    metrics = {"protocol": result.protocol, "model": model.name, "test": result.test, "valid": result.valid,
               "baselines": result.baselines,
               "timing": {"train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds}}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log_rows = list(getattr(model, "history", []) or [])
    if log_rows:
        with open(tmp / "train_log.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in log_rows for k in r)))
            writer.writeheader()
            writer.writerows(log_rows)
    (tmp / "report.html").write_text(run_report(model.name, meta, metrics, log_rows))
    return replace_dir(tmp, out_dir)


def run_report(model_name: str, meta: dict[str, Any], metrics: dict[str, Any], log_rows: list[dict]) -> str:
    report = HtmlReport(f"shopseq run: {model_name}")
    report.paragraph(metrics["protocol"], note=True)
    report.heading("Test metrics against the baselines")
    rows = [{"model": model_name, **metrics["test"]}] + [
        {"model": name, **m} for name, m in metrics["baselines"].items()
    ]
    report.table(rows, highlight=0)
    keys = [k for k in ("ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr") if k in metrics["test"]]
    report.bar_plot("test metrics", keys, {r["model"]: [r.get(k, 0.0) for k in keys] for r in rows})
    if log_rows:
        report.heading("Training")
        epochs = [r.get("epoch", i + 1) for i, r in enumerate(log_rows)]
        if any("loss" in r for r in log_rows):
            report.line_plot("training loss", epochs, {"loss": [r.get("loss", float("nan")) for r in log_rows]},
                             "epoch", "loss")
        val_keys = [k for k in log_rows[0] if k.startswith("valid_")]
        if val_keys:
            report.line_plot("validation", epochs, {k: [r.get(k, float("nan")) for r in log_rows] for k in val_keys},
                             "epoch", "metric")
        report.table(log_rows[-10:])
    report.heading("Data and split")
    report.key_values({**{f"data.{k}": v for k, v in meta["data"].items()},
                       **{f"split.{k}": v for k, v in meta["split"].items()}})
    report.heading("Model config")
    report.key_values({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in meta["model_config"].items()})
    return report.render()


def load_run(run_dir: Path) -> tuple[Recommender, dict[str, Any]]:
    """The model of a run directory and its config.json (clear errors for other versions)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a shopseq run directory (no config.json)")
    meta = json.loads(cfg_path.read_text())
    if meta.get("run_format") != RUN_FORMAT:
        raise ValueError(f"{run_dir} has run format {meta.get('run_format')!r}; this shopseq reads {RUN_FORMAT}")
    return load_model(run_dir / "model"), meta
