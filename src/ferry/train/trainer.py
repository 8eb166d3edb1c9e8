"""`ferry train`: fine-tune a Hugging Face encoder as a text classifier on CPU with torch.

Seeded and reproducible; class-balanced batches; AdamW with linear warmup and decay; validation at regular
intervals keeping the best checkpoint; a wall-clock budget that covers the final evaluation too. Writes a
Hugging Face model folder (labels in its config), the test split with predictions, and a training report.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.data.dataset import Dataset, LabelledText, load_dataset
from ferry.layer.config import BuildEnvironment
from ferry.layer.packaging import install_folder
from ferry.layer.source import resolve_source
from ferry.metrics import ClassificationMetrics, classification_metrics
from ferry.runtime.constants import FEATURE_EXTRACTION
from ferry.train.config import TrainConfig
from ferry.train.exceptions import InvalidTrainConfigError, TrainError
from ferry.train.report import TRAINING_REPORT_FILE, TrainingReport, ValidationPoint

REPORT_FILE = TRAINING_REPORT_FILE
PREDICTIONS_DIR = "predictions"
Progress = Callable[[str], None]


def _silent(_: str) -> None:
    return None


@dataclass
class TrainResult:
    out: Path
    training_report: TrainingReport


def train(config: TrainConfig, progress: Progress = _silent) -> TrainResult:
    """Fine-tune, evaluate and save; the output folder appears only when everything is written."""
    started = time.perf_counter()
    dataset = _load(config)
    train_rows = _training_rows(dataset, config)
    feedback = _feedback(config, dataset)
    feedback_rows = feedback.splits["train"] if feedback is not None else []
    held_out = (feedback.splits["validation"] + feedback.splits["test"]) if feedback is not None else []
    validation = _cap(dataset.splits["validation"], config.max_eval_texts)
    test = _cap(dataset.splits["test"], config.max_eval_texts)
    quick_validation = _sample(validation, config.max_validation_texts, config.seed)
    if not validation or not test:
        raise TrainError(f"{dataset.source}: too few texts for validation and test splits; give more data")
    source = _source(config.base)
    progress(f"fine-tuning {config.base} on {len(train_rows)} texts of {dataset.source} "
             f"({', '.join(dataset.labels)}); {config.steps} steps of {config.batch_size}"
             + (f"; {len(feedback_rows)} feedback texts make {config.feedback_share:.0%} of each batch, classes "
                f"drawn uniformly ({len(held_out)} held out)" if feedback is not None else ""))
    run = _Run(config, dataset.labels, source, progress)
    history = run.fit(train_rows, quick_validation, started, feedback_rows)
    validation_logits = run.finish(validation, quick_validation, history, started)
    progress(f"evaluating the best checkpoint (step {run.best_step})")
    prior: dict[str, Any] = {"applied": False, "reason": "natural sampling keeps the class prior"}
    if config.sampling == "balanced":
        prior, validation_logits = run.correct_prior(validation_logits, validation, dataset.splits["train"])
    evaluated = {
        "train": run.evaluate(_cap(train_rows, config.train_eval_texts)),
        "validation": run.metrics(validation, validation_logits),
        "test": run.evaluate(test),
        **({"feedback": run.evaluate(held_out)} if held_out else {}),
    }
    report = TrainingReport(
        base=config.base,
        data=dataset.source,
        labels=tuple(dataset.labels),
        dataset={"stats": dataset.stats, "counts": dataset.counts(), "train_rows_used": len(train_rows),
                 **({"feedback": {"source": feedback.source, "stats": feedback.stats, "counts": feedback.counts(),
                                  "train_rows_used": len(feedback_rows), "held_out": len(held_out)}}
                    if feedback is not None else {})},
        config={key: _as_json(value) for key, value in asdict(config).items()},
        steps=run.steps_done,
        best_step=run.best_step,
        stopped_early=run.stopped_early,
        history=tuple(history),
        prior_correction=prior,
        splits={name: metrics for name, (metrics, _) in evaluated.items()},
        train_split_note=f"train metrics are on {min(len(train_rows), config.train_eval_texts)} training texts",
        wall_seconds=round(time.perf_counter() - started, 1),
        threads=run.threads,
    )
    _save(config.out, run, report, {name: rows for name, rows in
                                    (("validation", validation), ("test", test), ("feedback", held_out)) if rows},
          evaluated)
    test_metrics = report.splits["test"]
    progress(f"saved {config.out}: test accuracy {test_metrics.accuracy:.4f}, "
             f"macro-F1 {test_metrics.macro_f1:.4f}, {report.wall_seconds:.0f} s")
    return TrainResult(out=config.out, training_report=report)


def _as_json(value: Any) -> Any:
    """A TrainConfig value as JSON holds it, so that the report in memory equals the report read back."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _load(config: TrainConfig) -> Dataset:
    from ferry.data import DataError

    try:
        return load_dataset(config.data, labels=config.labels, neutral=config.neutral,
                            text_column=config.text_column, label_column=config.label_column,
                            fractions=config.fractions, exclude_topics=config.exclude_topics)
    except DataError as exc:
        raise InvalidTrainConfigError(str(exc), field="data") from None


def _feedback(config: TrainConfig, dataset: Dataset) -> Dataset | None:
    """The labelled feedback of an update, split by the data's hash rule (:func:`ferry.data.dataset.split_of`),
    its labels held to the data's (a label the model does not have is an error naming it)."""
    from ferry.data import DataError

    if config.feedback_data is None:
        return None
    try:
        feedback = load_dataset(config.feedback_data, labels=dataset.labels, fractions=config.fractions)
    except DataError as exc:
        raise InvalidTrainConfigError(str(exc), field="feedback_data") from None
    if not feedback.splits["train"]:
        raise TrainError(f"{config.feedback_data}: no feedback text falls in the train split; give more feedback")
    return feedback


def _source(base: str) -> Path:
    """The base model's folder; the build's errors about its ``model`` are about training's ``base``."""
    from ferry.layer.exceptions import InvalidBuildConfigError, ModelSourceError

    try:
        return resolve_source(base, FEATURE_EXTRACTION, offline=BuildEnvironment.from_env().hub_offline).path
    except ModelSourceError as exc:
        raise InvalidTrainConfigError(exc.detail, field="base" if exc.field == "model" else exc.field) from None
    except InvalidBuildConfigError as exc:
        raise InvalidTrainConfigError(str(exc)) from None


def _training_rows(dataset: Dataset, config: TrainConfig) -> list[LabelledText]:
    rows = [row for row in dataset.splits["train"]
            if config.min_confidence is None or row.confidence is None or row.confidence >= config.min_confidence]
    rows = _cap(rows, config.max_train_texts)
    rows = _sample(rows, config.replay_texts, config.seed)
    missing = [label for label in dataset.labels if not any(row.label == label for row in rows)]
    if missing:
        raise TrainError(f"{dataset.source}: no training texts labelled {', '.join(missing)}")
    return rows


def _check_base_labels(source: Path, labels: Sequence[str]) -> None:
    """A classifier as the base (an update's warm start) keeps its head: its labels must be the data's, in the
    data's order, or each class would be trained under another's name."""
    config_file = source / "config.json"
    id2label = json.loads(config_file.read_text(encoding="utf-8")).get("id2label") if config_file.is_file() else None
    if not id2label:
        return
    names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    if names != list(labels) and not all(re.fullmatch(r"LABEL_\d+", name) for name in names):
        raise InvalidTrainConfigError(f"{source}: the base model's labels ({', '.join(names)}) are not the data's "
                                      f"({', '.join(labels)}), in that order", field="base")


def _sample(rows: Sequence[LabelledText], limit: int | None, seed: int) -> list[LabelledText]:
    """A seeded random sample that keeps the split's label distribution (what test accuracy is measured on)."""
    if limit is None or len(rows) <= limit:
        return list(rows)
    picked = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
    return [rows[int(i)] for i in sorted(picked)]


def _cap(rows: Sequence[LabelledText], limit: int | None) -> list[LabelledText]:
    """The first `limit` rows, interleaved across labels so that a slice keeps every class."""
    if limit is None or len(rows) <= limit:
        return list(rows)
    by_label: dict[str, list[LabelledText]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    picked: list[LabelledText] = []
    queues = [list(reversed(group)) for group in by_label.values()]
    while len(picked) < limit:
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop())
    return picked


class _Run:
    """One training run: the model, its optimizer and the best checkpoint so far."""

    def __init__(self, config: TrainConfig, labels: Sequence[str], source: Path, progress: Progress):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.torch = torch
        self.config = config
        self.labels = list(labels)
        self.progress = progress
        self.threads = config.threads or os.cpu_count() or 1
        torch.set_num_threads(self.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        _check_base_labels(source, labels)
        self.tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(source), local_files_only=True, num_labels=len(labels),
            id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
        )
        if config.freeze_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)
        if config.frozen_layers:
            layers = _encoder_layers(self.model)
            if config.frozen_layers >= len(layers):
                raise InvalidTrainConfigError(
                    f"{config.frozen_layers}: the model has only {len(layers)} layers", field="frozen_layers")
            for layer in layers[: config.frozen_layers]:
                layer.requires_grad_(False)
        self.best_state: dict[str, Any] | None = None
        self.best_score = -math.inf
        self.best_step = 0
        self.steps_done = 0
        self.planned_steps = config.steps
        self.stopped_early: str | None = None
        self.setup_seconds = 0.0  # model load and tokenization before the first step
        self.eval_seconds = 0.0
        self.evaluated_texts = 0
        self.validation_every = 0  # set when the budget plans the run
        self.last_validation = 0  # the step of the latest validation
        self.losses: list[float] = []

    def _inputs(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.config.max_length,
                              return_tensors="pt")

    def _batches(self, data: Sequence[LabelledText],
                 feedback: Sequence[LabelledText] = ()) -> Iterator[list[LabelledText]]:
        """Batches bucketed by length: a pool of 8 batches is sorted by token count and cut in order, so that
        little of each batch is padding. `natural` sampling goes through shuffled epochs (every text once per
        epoch); `balanced` draws a class uniformly, then a text of that class. With `feedback` (an update),
        `feedback_share` of each pool is feedback, a class drawn uniformly (among the classes it has), then a
        text of that class; the rest is `data` (the replay) as `sampling` says."""
        rows = [*data, *feedback]
        by_class = [np.array([i for i, row in enumerate(data) if row.label == label]) for label in self.labels]
        feedback_classes = [ids for label in self.labels
                            if len(ids := np.array([len(data) + i for i, row in enumerate(feedback)
                                                    if row.label == label]))]
        lengths = [len(ids) for ids in self.tokenizer([row.text for row in rows], truncation=True,
                                                       max_length=self.config.max_length)["input_ids"]]
        size = self.config.batch_size
        from_feedback = round(size * 8 * self.config.feedback_share) if feedback_classes else 0
        from_data = size * 8 - from_feedback
        epoch: list[int] = []
        while True:
            if self.config.sampling == "balanced":
                classes = self.rng.integers(0, len(self.labels), size=from_data)
                drawn = [int(self.rng.choice(by_class[c])) for c in classes]
            else:
                while len(epoch) < from_data:
                    epoch.extend(int(i) for i in self.rng.permutation(len(data)))
                drawn, epoch = epoch[:from_data], epoch[from_data:]
            if from_feedback:
                classes = self.rng.integers(0, len(feedback_classes), size=from_feedback)
                drawn += [int(self.rng.choice(feedback_classes[c])) for c in classes]
            pool = sorted(drawn, key=lambda i: lengths[i])
            for start in self.rng.permutation(8) * size:
                yield [rows[i] for i in pool[start : start + size]]

    def fit(
        self, rows: Sequence[LabelledText], validation: Sequence[LabelledText], started: float,
        feedback: Sequence[LabelledText] = (),
    ) -> list[ValidationPoint]:
        torch = self.torch
        config = self.config
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": [p for n, p in trainable if not n.endswith(("bias", "LayerNorm.weight"))],
              "weight_decay": config.weight_decay},
             {"params": [p for n, p in trainable if n.endswith(("bias", "LayerNorm.weight"))], "weight_decay": 0.0}],
            lr=config.learning_rate, fused=True,
        )
        warmup = min(config.warmup_steps, config.steps // 4)

        def schedule(step: int) -> float:  # linear warmup, then linear decay to 0 at the planned last step
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (self.planned_steps - step) / max(1, self.planned_steps - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        label_ids = {label: i for i, label in enumerate(self.labels)}
        history: list[ValidationPoint] = []
        bar = _bar(config.steps)
        batches = self._batches(rows, feedback)
        next_batch = next(batches)
        self.setup_seconds = time.perf_counter() - started
        while self.steps_done < self.planned_steps:
            self.model.train()
            batch, next_batch = next_batch, next(batches)
            inputs = self._inputs([row.text for row in batch])
            loss = self.model(**inputs, labels=torch.tensor([label_ids[row.label] for row in batch])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            self.losses.append(loss.item())
            self.steps_done += 1
            bar.update(1)
            if self.steps_done == _CALIBRATION_STEPS:
                self._fit_budget(started, len(validation))
            if self.steps_done < self.planned_steps and self._validation_due():  # the last one: see finish()
                eval_started = time.perf_counter()
                metrics, _ = self.evaluate(validation)
                self.eval_seconds += time.perf_counter() - eval_started
                self.evaluated_texts += len(validation)
                self.last_validation = self.steps_done
                self._fit_budget(started, len(validation))
                self._record(history, metrics, started)
                if config.select == "best":
                    self._keep_if_best(metrics.accuracy)
        bar.close()
        return history

    def _record(self, history: list[ValidationPoint], metrics: ClassificationMetrics, started: float) -> None:
        recent = self.losses[-max(1, self.planned_steps // self.config.validations):]
        history.append(ValidationPoint(step=self.steps_done, loss=round(float(np.mean(recent)), 4),
                                       validation_accuracy=round(metrics.accuracy, 4),
                                       validation_macro_f1=round(metrics.macro_f1, 4),
                                       elapsed_s=round(time.perf_counter() - started, 1)))
        self.progress(f"step {self.steps_done}/{self.planned_steps}: validation accuracy "
                      f"{metrics.accuracy:.4f}, macro-F1 {metrics.macro_f1:.4f}")

    def _validation_due(self) -> bool:
        """Validations spread over the plan: due once `every` steps have passed since the last one (a replanned
        run changes `every`; counting from the last validation never validates twice a few steps apart)."""
        every = self.validation_every or max(1, math.ceil(self.planned_steps / self.config.validations))
        return self.steps_done - self.last_validation >= every

    def finish(self, validation: Sequence[LabelledText], sample: Sequence[LabelledText],
               history: list[ValidationPoint], started: float) -> np.ndarray:
        """The last validation, and the validation logits of the checkpoint kept.

        The final model is scored on the whole validation split (the report needs those logits anyway); its
        accuracy on the sample the earlier validations used is read from them, so the last validation costs
        no pass of its own. An earlier checkpoint that scored better is restored and scored again."""
        logits = self.logits(validation)
        position = {row.text: i for i, row in enumerate(validation)}
        metrics, _ = self.metrics(sample, logits[[position[row.text] for row in sample]])
        self._record(history, metrics, started)
        # a tie goes to the later, more trained model; "last" keeps the last whatever it scores
        if metrics.accuracy >= self.best_score or self.config.select == "last":
            self.best_score, self.best_step, self.best_state = metrics.accuracy, self.steps_done, None
            return logits
        self.restore_best()
        return self.logits(validation)

    def _fit_budget(self, started: float, validation_texts: int) -> None:
        """Plan the steps so that training, its validations and the final evaluation fit max_minutes.

        Replanned after every validation from the times measured so far. The schedule decays to zero at the
        planned step, so a shorter run is a complete one, not a cut one."""
        if self.config.max_minutes is None:
            return
        now = time.perf_counter()
        per_step = (now - started - self.setup_seconds - self.eval_seconds) / self.steps_done
        # inference costs about a third of a training step per text until a validation has been timed
        per_text = (self.eval_seconds / self.evaluated_texts if self.evaluated_texts
                    else per_step / (3 * self.config.batch_size))
        every = self.validation_every or max(1, math.ceil(self.planned_steps / self.config.validations))
        # sample validations still to come; the last one reads the final evaluation's logits (finish())
        validations_left = max(0, math.ceil((self.planned_steps - self.steps_done) / every) - 1)
        final_texts = self.config.train_eval_texts + 2 * (self.config.max_eval_texts or 2300)
        reserve = per_text * (validations_left * validation_texts + final_texts) * 1.1 + 10.0  # + saving
        available = self.config.max_minutes * 60 - (now - started) - reserve
        fitting = min(self.config.steps, self.steps_done + int(available / per_step))
        if fitting != self.planned_steps:
            self.planned_steps = max(self.steps_done + 1, fitting)
            # validations spread over the plan, at least a few steps apart (a busy machine plans few steps)
            self.validation_every = max(_CALIBRATION_STEPS, math.ceil(self.planned_steps / self.config.validations))
            self.stopped_early = None
            if self.planned_steps < self.config.steps:
                self.stopped_early = (f"max_minutes {self.config.max_minutes}: planned {self.planned_steps} of "
                                      f"{self.config.steps} steps at {per_step:.2f} s a step")
                self.progress(self.stopped_early)

    def _keep_if_best(self, score: float) -> None:
        """Keep the checkpoint with the best validation accuracy; a tie goes to the later, more trained one."""
        if score >= self.best_score:
            self.best_score = score
            self.best_step = self.steps_done
            self.best_state = {key: value.detach().clone() for key, value in self.model.state_dict().items()}

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def logits(self, rows: Sequence[LabelledText]) -> np.ndarray:
        """The model's logits for `rows`, in order.

        Computed in batches of texts of about the same length in tokens: sorting by characters, as this did
        before, left much padding (tweets hold URLs and emoji) and cost 15.3 ms a text against 9.0 ms."""
        torch = self.torch
        self.model.eval()
        lengths = [len(ids) for ids in self.tokenizer([row.text for row in rows], truncation=True,
                                                       max_length=self.config.max_length)["input_ids"]]
        order = sorted(range(len(rows)), key=lambda i: lengths[i])
        logits = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), 32):
                chunk = order[start : start + 32]
                logits[chunk] = self.model(**self._inputs([rows[i].text for i in chunk])).logits.float().numpy()
        return logits

    def evaluate(self, rows: Sequence[LabelledText]) -> tuple[ClassificationMetrics, np.ndarray]:
        """Metrics on `rows` and the predicted class of each."""
        return self.metrics(rows, self.logits(rows))

    def metrics(self, rows: Sequence[LabelledText], logits: np.ndarray) -> tuple[ClassificationMetrics, np.ndarray]:
        predicted = logits.argmax(axis=-1)
        truth = [self.labels.index(row.label) for row in rows]
        return classification_metrics(truth, predicted.tolist(), self.labels), predicted

    def correct_prior(
        self, logits: np.ndarray, validation: Sequence[LabelledText], train: Sequence[LabelledText]
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Undo the class-balanced sampling's uniform prior: add log(class share of the training split) to the
        classifier's bias (logit adjustment) when that raises validation accuracy. Returns the decision and
        the validation logits as the model now computes them."""
        counts = np.array([sum(1 for row in train if row.label == label) for label in self.labels], dtype=np.float64)
        shift = np.log(counts / counts.sum())
        shift -= shift.mean()
        truth = np.array([self.labels.index(row.label) for row in validation])
        before = float(np.mean(logits.argmax(axis=-1) == truth))
        after = float(np.mean((logits + shift).argmax(axis=-1) == truth))
        applied = after > before
        if applied:
            bias = _classifier_bias(self.model, len(self.labels))
            with self.torch.no_grad():
                bias += self.torch.tensor(shift, dtype=bias.dtype)
        decision = {"applied": applied, "shift": [round(float(v), 4) for v in shift],
                    "validation_accuracy_without": round(before, 4), "validation_accuracy_with": round(after, 4)}
        self.progress(f"prior correction {'applied' if applied else 'not applied'}: validation accuracy "
                      f"{before:.4f} without, {after:.4f} with")
        return decision, (logits + shift if applied else logits)


_CALIBRATION_STEPS = 10


def _classifier_bias(model: Any, classes: int) -> Any:
    """The bias of the layer that produces the logits: the last Linear with one output per class."""
    import torch

    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == classes]
    if not last or last[-1].bias is None:
        raise TrainError(f"cannot find the classification layer of {type(model).__name__}")
    return last[-1].bias


def _encoder_layers(model: Any) -> Any:
    """The stack of transformer layers of a BERT-like model (BERT, DistilBERT, RoBERTa, ...)."""
    base = model.base_model
    for path in (("encoder", "layer"), ("transformer", "layer"), ("layers",)):
        node = base
        for attribute in path:
            node = getattr(node, attribute, None)
        if node is not None:
            return node
    raise InvalidTrainConfigError(
        f"cannot find the encoder layers of {type(model).__name__}; train with frozen_layers 0"
    )


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="training", unit="step", file=sys.stderr, mininterval=2.0,
                disable=not sys.stderr.isatty())


def _save(out: Path, run: _Run, report: TrainingReport, splits: dict[str, list[LabelledText]],
          evaluated: dict[str, tuple[ClassificationMetrics, np.ndarray]]) -> None:
    """Write into a hidden sibling folder, then rename: a half-written model never appears at `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        run.model.save_pretrained(staging)
        run.tokenizer.save_pretrained(staging)
        (staging / PREDICTIONS_DIR).mkdir()
        for name, rows in splits.items():
            _, predicted = evaluated[name]
            with (staging / PREDICTIONS_DIR / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
                for row, guess in zip(rows, predicted, strict=True):
                    handle.write(json.dumps({"text": row.text, "label": row.label,
                                             "predicted": run.labels[int(guess)]}, ensure_ascii=False) + "\n")
        report.save(staging)
        install_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
