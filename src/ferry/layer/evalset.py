"""The texts the parity gate runs on: a labelled (or unlabelled) file, else a built-in set of varied sentences."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ferry.data import DataError, read_examples
from ferry.layer.exceptions import InvalidBuildConfigError

BUILTIN_NAME = "built-in sentences"


@dataclass(frozen=True)
class EvalSet:
    texts: list[str]
    labels: list[str] | None
    source: str


def builtin_eval_set() -> EvalSet:
    text = resources.files("ferry.layer").joinpath("eval_sentences.txt").read_text(encoding="utf-8")
    return EvalSet(texts=[line for line in text.splitlines() if line.strip()], labels=None, source=BUILTIN_NAME)


def load_eval_set(path: Path | None, *, text_column: str = "text", label_column: str = "label",
                  field: str = "eval_data") -> EvalSet:
    """The texts of `path` (the built-in sentences when None); a file that cannot be read is an error about the
    build's argument `field`."""
    if path is None:
        return builtin_eval_set()
    try:
        examples = read_examples(path, text_column=text_column, label_column=label_column)
    except DataError as exc:
        raise InvalidBuildConfigError(str(exc), field=field) from None
    labels = [example.label for example in examples]
    return EvalSet(
        texts=[example.text for example in examples],
        labels=None if labels[0] is None else [str(label) for label in labels],
        source=str(path),
    )


def label_ids(eval_set: EvalSet, model_labels: list[str], field: str = "eval_data") -> list[int] | None:
    """The eval set's labels as the model's class ids; a label the model does not know is an error."""
    if eval_set.labels is None:
        return None
    index = {label: position for position, label in enumerate(model_labels)}
    unknown = sorted({label for label in eval_set.labels if label not in index})
    if unknown:
        raise InvalidBuildConfigError(
            f"{eval_set.source}: label(s) {', '.join(map(repr, unknown[:5]))} are not labels of the "
            f"model ({', '.join(model_labels)})",
            field=field,
        )
    return [index[label] for label in eval_set.labels]
