"""From the training set to model matrices: the feature columns, their dtypes, the splits.

Text features become pandas categories with the categories seen in training, so
LightGBM stores the mapping in the model and applies it at scoring time; the
logistic-regression baseline one-hot encodes the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from e2i_platform.training.dataset import LABEL, SPLIT, feature_columns


@dataclass(frozen=True)
class ModelData:
    features: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]
    X: dict[str, pd.DataFrame]  # by split: train, validation, test
    y: dict[str, pd.Series]
    frame: dict[str, pd.DataFrame]  # the rows themselves (entity columns, region, ...)


def as_model_input(
    df: pd.DataFrame, features: list[str], categories: dict[str, list[str]]
) -> pd.DataFrame:
    """The model's input columns, in order, with categories fixed to the training ones
    (an unseen value becomes missing, never a new code)."""
    out = pd.DataFrame(index=df.index)
    for column in features:
        if column in categories:
            out[column] = pd.Categorical(df[column].astype(object), categories=categories[column])
        else:
            out[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")
    return out


def model_data(dataset: pd.DataFrame) -> ModelData:
    features = feature_columns(dataset)
    categorical = [
        c
        for c in features
        if not pd.api.types.is_numeric_dtype(dataset[c]) or pd.api.types.is_bool_dtype(dataset[c])
    ]
    train = dataset[dataset[SPLIT] == "train"]
    categories = {c: sorted(train[c].dropna().astype(str).unique().tolist()) for c in categorical}
    X, y, frame = {}, {}, {}
    for split in ("train", "validation", "test"):
        rows = dataset[dataset[SPLIT] == split]
        if rows.empty:
            raise ValueError(f"training_dataset: split {split!r} has no rows")
        X[split] = as_model_input(rows, features, categories)
        y[split] = rows[LABEL].astype(int)
        frame[split] = rows
    return ModelData(features, categorical, categories, X, y, frame)
