"""Labelled tables for measuring detectors: CSV/Parquet with a label column, and NSL-KDD.

Numeric columns are features as they are; text columns are one-hot encoded with the
categories of the training table (a category first seen in the test table encodes as all
zeros). A row is an anomaly when its label is not one of the normal values (or, for
numeric labels, when it is non-zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

NSL_KDD_TRAIN = "KDDTrain+_20Percent.txt"
NSL_KDD_TEST = "KDDTest+.txt"
NSL_KDD_LABEL = "label"
NSL_KDD_NORMAL = "normal"
NSL_KDD_DROPPED = ("difficulty",)  # how many classifiers got the row right: not a feature


class LabelledDataError(ValueError):
    """A labelled file that cannot be used; carries the path (or table) and why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass
class LabelledSplit:
    """Training and test matrices with binary labels (True = anomaly) and feature names."""

    train_features: np.ndarray
    train_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray
    feature_names: list[str]

    @property
    def normal_train_features(self) -> np.ndarray:
        """The training rows labelled normal (the clean-baseline setting)."""
        return self.train_features[~self.train_labels]


def read_table(path: Path) -> pa.Table:
    """A CSV or Parquet file as an Arrow table."""
    if not path.is_file():
        raise LabelledDataError(str(path), "no such file")
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        return pa_csv.read_csv(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise LabelledDataError(
            str(path), f"not a readable CSV or Parquet file: {error}"
        ) from error


def binary_labels(column: pa.ChunkedArray | pa.Array, normal_values: tuple[str, ...]) -> np.ndarray:
    """True for anomalies: a label outside `normal_values`, or a non-zero numeric label."""
    values = column.to_pylist()
    if (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_boolean(column.type)
    ):
        return np.array([bool(value) for value in values])
    normal = {value.lower() for value in normal_values}
    return np.array([str(value).strip().lower() not in normal for value in values])


def encode_features(
    train: pa.Table, test: pa.Table, label_column: str, dropped: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Numeric columns as they are, text columns one-hot on the training categories."""
    for table, name in ((train, "training"), (test, "test")):
        if label_column not in table.column_names:
            raise LabelledDataError(name, f"no label column {label_column!r}")
    train_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    names: list[str] = []
    for name in train.column_names:
        if name == label_column or name in dropped:
            continue
        if name not in test.column_names:
            raise LabelledDataError("test", f"no column {name!r} (the training table has it)")
        column = train.column(name)
        if (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or pa.types.is_boolean(column.type)
        ):
            train_parts.append(_numbers(column))
            test_parts.append(_numbers(test.column(name)))
            names.append(name)
            continue
        categories = sorted({str(value) for value in column.to_pylist() if value is not None})
        train_parts.append(_one_hot(column, categories))
        test_parts.append(_one_hot(test.column(name), categories))
        names.extend(f"{name}={category}" for category in categories)
    if not names:
        raise LabelledDataError("training", "no feature columns besides the label")
    return np.hstack(train_parts), np.hstack(test_parts), names


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return np.nan_to_num(values, nan=0.0).reshape(-1, 1)


def _one_hot(column: pa.ChunkedArray, categories: list[str]) -> np.ndarray:
    index = {category: position for position, category in enumerate(categories)}
    encoded = np.zeros((len(column), len(categories)))
    for row, value in enumerate(column.to_pylist()):
        position = index.get(str(value))
        if position is not None:
            encoded[row, position] = 1.0
    return encoded


def labelled_split(
    train: pa.Table,
    test: pa.Table,
    label_column: str,
    normal_values: tuple[str, ...] = ("normal", "benign", "0", "false"),
    dropped: tuple[str, ...] = (),
) -> LabelledSplit:
    """Encode a training and a test table into matrices and binary labels."""
    train_features, test_features, names = encode_features(train, test, label_column, dropped)
    return LabelledSplit(
        train_features=train_features,
        train_labels=binary_labels(train.column(label_column), normal_values),
        test_features=test_features,
        test_labels=binary_labels(test.column(label_column), normal_values),
        feature_names=names,
    )


def nsl_kdd_column_names(folder: Path) -> list[str]:
    """The 41 feature names from `Field Names.csv`, then `label` and `difficulty`."""
    names_file = folder / "Field Names.csv"
    if not names_file.is_file():
        raise LabelledDataError(str(folder), "no `Field Names.csv`: not an NSL-KDD folder")
    names = [
        line.split(",")[0].strip()
        for line in names_file.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return [*names, NSL_KDD_LABEL, "difficulty"]


def read_nsl_kdd_file(path: Path, names: list[str]) -> pa.Table:
    """One NSL-KDD file (headerless CSV) with named columns."""
    if not path.is_file():
        raise LabelledDataError(str(path), "no such NSL-KDD file")
    return pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(column_names=names),
        convert_options=pa_csv.ConvertOptions(
            column_types={"protocol_type": pa.string(), "service": pa.string(), "flag": pa.string()}
        ),
    )


def load_nsl_kdd(
    folder: Path, train_file: str = NSL_KDD_TRAIN, test_file: str = NSL_KDD_TEST
) -> LabelledSplit:
    """NSL-KDD: train on KDDTrain+_20Percent, test on KDDTest+, categoricals one-hot."""
    names = nsl_kdd_column_names(folder)
    train = read_nsl_kdd_file(folder / train_file, names)
    test = read_nsl_kdd_file(folder / test_file, names)
    return labelled_split(train, test, NSL_KDD_LABEL, (NSL_KDD_NORMAL,), NSL_KDD_DROPPED)
