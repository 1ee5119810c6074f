"""Frozen configuration objects.

The entry points turn absl flags into these once (`toolkit.flags.to_config`); library code only
ever sees these objects, never FLAGS, so it can be called from tests and other programs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DISTRIBUTIONS = ("auto", "mirrored", "multi_worker", "one_device")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEPTHS = (50, 101, 152)
LAYOUTS = ("nhwc", "nchw")
# The oldest opset tf2onnx converts ResNetV2 to without workarounds.
MIN_OPSET = 13
# The newest opset tf2onnx 1.17 writes: max(tf2onnx.constants.OPSET_TO_IR_VERSION) == 18. Kept
# as a number so that checking a flag does not import tf2onnx (which imports TensorFlow); a test
# compares it with the installed tf2onnx.
MAX_OPSET = 18


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the TFRecord shards are and how to read them."""

    data_dir: str = ""  # shards + labels.txt + manifest.json; "" means the demo dataset
    image_size: int = 224
    batch_size: int = 64  # global, across every replica of every worker
    label_offset: int = 0  # subtracted from stored labels (ImageNet shards count from 1)
    crop_min_scale: float = 0.08  # random-resized-crop area range lower bound
    cache: bool = False  # cache decoded records in memory (small datasets)
    shuffle_buffer: int = 2048
    deterministic: bool = False
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    depth: int = 50
    num_classes: int = 0  # 0: read from the data
    init_weights: str = ""  # .keras or .weights.h5 to start from (fine-tuning)
    freeze_backbone: bool = False
    sync_batchnorm: bool = False


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str = "runs/default"
    epochs: int = 10
    steps_per_epoch: int = 0  # 0: one pass over the training split
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    weight_decay: float = 5e-5
    label_smoothing: float = 0.0
    precision: str = "auto"
    xla: bool = True
    distribution: str = "auto"
    cpu_replicas: int = 1
    cluster_timeout: int = 900  # seconds a multi-worker job waits at start for every worker; 0: forever
    seed: int = 0
    deterministic: bool = False
    fresh: bool = False
    log_every: int = 20
    checkpoint_every: int = 500  # steps; a checkpoint is also written at each epoch end
    keep_checkpoints: int = 3
    eval_every: int = 1  # epochs
    warmup_steps_for_speed: int = 5  # steps excluded from images/s


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    export: bool = True
    export_dir: str = ""  # "" means <model_dir>/export
    opset: int = 17
    onnx_layout: str = "nhwc"
    parity_images: int = 0  # 0: every validation image
    parity_atol: float = 1e-4
    onnx_fp16: bool = False
    onnx_int8: bool = False


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return cls(
            data=DataConfig(**d.get("data", {})),
            model=ModelConfig(**d.get("model", {})),
            train=TrainConfig(**d.get("train", {})),
            export=ExportConfig(**d.get("export", {})),
        )

    def replace(self, **sections) -> "Config":
        """A copy with whole sections or single fields replaced: replace(train={'epochs': 3})."""
        updated = {}
        for name, value in sections.items():
            current = getattr(self, name)
            updated[name] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
        return dataclasses.replace(self, **updated)


class ConfigError(ValueError):
    """A bad setting. The message is one line and names the flag."""


def validate(config: Config, num_replicas: Optional[int] = None) -> None:
    """Raise ConfigError for values that would fail later; cheap, done before any work."""
    t, d, m = config.train, config.data, config.model

    def need(cond, flag, msg):
        if not cond:
            raise ConfigError(f"--{flag}: {msg}")

    need(t.precision in PRECISIONS, "precision", f"unknown precision {t.precision!r}; choose one of {', '.join(PRECISIONS)}")
    need(t.distribution in DISTRIBUTIONS, "distribution", f"unknown distribution {t.distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    need(t.optimizer in OPTIMIZERS, "optimizer", f"unknown optimizer {t.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    need(m.depth in DEPTHS, "depth", f"unsupported depth {m.depth}; choose one of {DEPTHS}")
    need(d.batch_size > 0, "batch_size", f"must be positive, got {d.batch_size}")
    need(d.image_size >= 32, "image_size", f"must be at least 32 (ResNet downsamples 32x), got {d.image_size}")
    need(t.epochs > 0, "epochs", f"must be positive, got {t.epochs}")
    need(t.steps_per_epoch >= 0, "steps_per_epoch", f"must be zero or positive, got {t.steps_per_epoch}")
    need(t.learning_rate > 0, "learning_rate", f"must be positive, got {t.learning_rate}")
    need(t.warmup_epochs >= 0, "warmup_epochs", f"must be zero or positive, got {t.warmup_epochs}")
    need(t.weight_decay >= 0, "weight_decay", f"must be zero or positive, got {t.weight_decay}")
    need(0 <= t.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    need(0 <= t.momentum < 1, "momentum", f"must be in [0, 1), got {t.momentum}")
    need(t.cpu_replicas >= 1, "cpu_replicas", f"must be at least 1, got {t.cpu_replicas}")
    need(t.cluster_timeout >= 0, "cluster_timeout", f"must be zero (wait forever) or positive, got {t.cluster_timeout}")
    need(t.log_every >= 1, "log_every", f"must be at least 1, got {t.log_every}")
    need(t.checkpoint_every >= 1, "checkpoint_every", f"must be at least 1, got {t.checkpoint_every}")
    need(t.keep_checkpoints >= 1, "keep_checkpoints", f"must be at least 1, got {t.keep_checkpoints}")
    need(m.num_classes >= 0, "num_classes", f"must be positive (or 0 to read it from the data), got {m.num_classes}")
    need(0 < d.crop_min_scale <= 1, "crop_min_scale", f"must be in (0, 1], got {d.crop_min_scale}")
    need(t.model_dir != "", "model_dir", "must be set")
    need(not d.data_dir or os.path.isdir(d.data_dir), "data_dir", f"{d.data_dir} is not a directory")
    need(not m.init_weights or os.path.isfile(m.init_weights), "init_weights", f"{m.init_weights} does not exist")
    validate_export(config.export)
    if num_replicas is not None:
        need(
            d.batch_size % num_replicas == 0,
            "batch_size",
            f"global batch {d.batch_size} is not divisible by the {num_replicas} replicas",
        )


def validate_export(config: ExportConfig) -> None:
    """Raise ConfigError for an ExportConfig value the export cannot work with."""

    def need(cond, flag, msg):
        if not cond:
            raise ConfigError(f"--{flag}: {msg}")

    need(config.onnx_layout in LAYOUTS, "onnx_layout", f"must be one of {', '.join(LAYOUTS)}, got {config.onnx_layout!r}")
    need(isinstance(config.opset, int) and not isinstance(config.opset, bool) and MIN_OPSET <= config.opset <= MAX_OPSET,
         "opset", f"must be between {MIN_OPSET} and {MAX_OPSET} (what tf2onnx converts ResNetV2 to), got {config.opset}")
    need(isinstance(config.parity_images, int) and config.parity_images >= 0,
         "parity_images", f"must be 0 (every validation image) or positive, got {config.parity_images}")
    # 0 would demand bit-identical formats, which float32 kernels of different libraries never are
    need(isinstance(config.parity_atol, (int, float)) and 0 < config.parity_atol < math.inf,
         "parity_atol", f"must be positive and finite, got {config.parity_atol}")
    if config.export_dir:
        blocker = _file_in_the_way(config.export_dir)
        need(blocker is None, "export_dir", f"{blocker} exists and is not a directory")


def _file_in_the_way(path: str):
    """The nearest existing ancestor of `path` (itself included) when it is not a directory, else None."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return None if os.path.isdir(path) else path
