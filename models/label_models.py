"""The label models by name: fit, load and persist either generation behind one entry point.

``weaver-v2`` (binned scores, answer groups, learned dependency discounts) is the default: on the
realistic simulator and on the GSM8K dev set it selects better and is calibrated where version 1
is not (docs/label-model.md has the ablation). ``weaver-v1`` (binary votes, Dawid-Skene) stays
selectable; its artifacts keep loading.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from models.weaver import ARTIFACT_FORMAT, WeaverModel
from models.weaver_v2 import ARTIFACT_FORMAT_V2, WeaverV2Config, WeaverV2Model

LabelModel = WeaverModel | WeaverV2Model
LabelModelName = Literal["weaver-v2", "weaver-v1"]
LABEL_MODEL_NAMES: tuple[LabelModelName, ...] = ("weaver-v2", "weaver-v1")
DEFAULT_LABEL_MODEL: LabelModelName = "weaver-v2"


def fit_named(name: str, matrices: Sequence[Any], verifier_names: Sequence[str],
              answers: Sequence[Sequence[str | None] | None] | None = None,
              tasks: Sequence[str | None] | None = None, by_task: bool = False,
              v2_config: WeaverV2Config | None = None) -> LabelModel:
    """Fit the named label model label-free. v1 ignores answers and ``v2_config``; v2 has no per-task models."""
    if name == "weaver-v1":
        return WeaverModel.fit(matrices, verifier_names, tasks=tasks if by_task else None)
    if name == "weaver-v2":
        return WeaverV2Model.fit(matrices, verifier_names, answers, tasks, v2_config)
    raise ValueError(f"unknown label model {name!r}; choose one of {', '.join(LABEL_MODEL_NAMES)}")


def label_model_name(model: LabelModel) -> LabelModelName:
    return "weaver-v2" if isinstance(model, WeaverV2Model) else "weaver-v1"


def from_json(data: dict[str, Any]) -> LabelModel:
    fmt = data.get("format")
    if fmt == ARTIFACT_FORMAT_V2:
        return WeaverV2Model.from_json(data)
    if fmt == ARTIFACT_FORMAT:
        return WeaverModel.from_json(data)
    raise ValueError(f"not a label-model artifact (format={fmt!r}; expected {ARTIFACT_FORMAT_V2} or {ARTIFACT_FORMAT})")


def load(path: str | Path) -> LabelModel:
    return from_json(json.loads(Path(path).read_text()))
