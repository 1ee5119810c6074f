"""Frozen configuration objects.

The entry points turn absl flags into these once (`toolkit.flags.to_config`); library code only
ever sees these objects, never FLAGS, so it can be called from tests and other programs.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

from toolkit import layout
from toolkit.common import storage
from toolkit.common.errors import BadInput

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DISTRIBUTIONS = ("auto", "mirrored", "multi_worker", "one_device")
CLUSTERS = ("auto", "tf_config", "kubernetes", "slurm", "none")  # toolkit.train.cluster reads each
OPTIMIZERS = ("sgd", "adam", "adamw")
DEPTHS = (26, 50, 101, 152)
IMAGENET_DEPTHS = (50, 101, 152)  # the depths Keras publishes ImageNet weights for (models.pretrained.NOTOP_MD5; a test compares)
RECIPES = ("auto", "demo", "small_data", "finetune", "imagenet", "notebook", "default")  # toolkit/recipes/<name>.flags
XLA_MODES = ("auto", "on", "off")
LAYOUTS = ("nhwc", "nchw")
# The oldest opset tf2onnx converts ResNetV2 to without workarounds.
MIN_OPSET = 13
# The newest opset tf2onnx 1.17 writes: max(tf2onnx.constants.OPSET_TO_IR_VERSION) == 18. Kept
# as a number so that checking a flag does not import tf2onnx (which imports TensorFlow); a test
# compares it with the installed tf2onnx.
MAX_OPSET = 18


def _opt(default, help: str, **meta):
    """A config field with its command-line help: toolkit.cli defines --<field name> from it (meta:
    kind="multi" for a repeatable flag, lower_bound=N)."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the TFRecord shards are and how to read them; the seed of every random choice."""

    data_dir: str = _opt("", "A folder of photos (one subfolder per class, or train/, val/, test/ of them: converted once "
                             "into <model_dir>/data) or TFRecord shards (from toolkit.data.convert); empty: the built-in "
                             "demo dataset.")
    image_size: int = _opt(224, "Square input size in pixels, at least 32: what validation, test and the export see, "
                                "and the training size unless --train_sizes says otherwise.")
    train_sizes: str = _opt("", "Progressive resizing: training image sizes as SIZE@EPOCH entries, e.g. 64@1,96@41,128@81 "
                                "(64 px from epoch 1, 96 from 41, 128 from 81); 96@1 with --image_size 128 trains small "
                                "and evaluates larger (FixRes). Empty: --image_size throughout.")
    batch_size: int = _opt(64, "GLOBAL batch size, split evenly across all replicas of all workers.")
    label_offset: int = _opt(0, "Subtracted from stored labels, e.g. 1 for ImageNet shards that number classes 1..1000.")
    crop_min_scale: float = _opt(0.08, "Smallest area fraction of a random-resized training crop.")
    cache: bool = _opt(False, "Cache the encoded records in memory (small datasets).")
    shuffle_buffer: int = _opt(2048, "Records in the shuffle buffer of each input pipeline.")
    randaugment: str = _opt("", "RandAugment as N,M (e.g. 2,9): N ops per training image at magnitude M of 0-10 "
                                "(timm's scale); empty: off.")
    mixup_alpha: float = _opt(0.0, "Mixup: blend image pairs with a Beta(alpha, alpha) weight; 0: off (0.2-0.8 usual).")
    cutmix_alpha: float = _opt(0.0, "CutMix: paste a box of another image, area from Beta(alpha, alpha); 0: off (1.0 usual).")
    mix_prob: float = _opt(1.0, "Share of training batches that get mixup or CutMix (when either alpha is set).")
    mix_switch_prob: float = _opt(0.5, "With both alphas set: share of mixed batches that use CutMix rather than mixup.")
    seed: int = _opt(0, "Seed for initialization, shuffling and augmentation.")
    deterministic: bool = _opt(False, "Deterministic ops and input order: a killed and resumed run ends with the same "
                                      "weights (turns XLA off, which has no deterministic mode).")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network, and what it starts from."""

    depth: int = _opt(50, "ResNetV2 depth: 26, 50, 101 or 152 (26 has no ImageNet weights).")
    num_classes: int = _opt(0, "Number of classes; 0 reads it from the data's labels.")
    init_weights: str = _opt("", "Start from these weights: imagenet (Keras' published ImageNet weights, downloaded "
                                 "once and cached) or a .keras / .weights.h5 file; a head of another shape is re-initialized.")
    freeze_backbone: bool = _opt(False, "Train only the classification head (fine-tuning).")
    sync_batchnorm: bool = _opt(False, "Synchronize BatchNorm statistics across replicas.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimization, the hardware, and the cadences of logging, checkpoints and evaluation."""

    recipe: str = _opt("auto", "A recipe shipped with the toolkit supplies every flag you do not give: demo, small_data, "
                               "finetune, imagenet, notebook or default; auto: demo without --data_dir, finetune with "
                               "--init_weights, small_data below 5,000 training images, else default. The start line says "
                               "which and why.")
    model_dir: str = _opt("runs/default", "Where checkpoints, logs, plots, the summary and exports go; re-running resumes from it.")
    epochs: int = _opt(90, "Training epochs (the most, with --time_budget).")
    time_budget: float = _opt(0.0, "Minutes the whole run may take (set-up, training, evaluations, export): once the first "
                                   "steps are timed on this machine, the schedule is cut to the epochs that fit (never more "
                                   "than --epochs); the start says the plan and summary.json whether it held. 0: no budget.")
    steps_per_epoch: int = _opt(0, "Steps per epoch; 0: one pass over the training split.")
    optimizer: str = _opt("sgd", f"{'|'.join(OPTIMIZERS)}: sgd with momentum, adam, or adamw (decoupled weight decay).")
    learning_rate: float = _opt(0.1, "Peak learning rate after warmup.")
    momentum: float = _opt(0.9, "Momentum of the sgd optimizer (ignored by adam and adamw).")
    warmup_epochs: float = _opt(5.0, "Epochs of linear warmup before the cosine decay.")
    weight_decay: float = _opt(5e-5, "Weight decay of kernels (decoupled for sgd/adamw, L2 loss for adam).")
    label_smoothing: float = _opt(0.0, "Label smoothing for the cross-entropy.")
    ema_decay: float = _opt(0.0, "Keep an exponential moving average of the weights with this decay (e.g. 0.999), "
                                 "warmed up over the first steps; evaluated beside the raw weights and exported. 0: off.")
    precision: str = _opt("auto", f"{'|'.join(PRECISIONS)}; auto: fp16 on GPUs of compute capability >= 7.0, bf16 on "
                                  "CPUs with bf16 units (AMX, AVX512_BF16) when oneDNN is on, else fp32.")
    xla: str = _opt("auto", "auto|on|off: XLA-compile the train step; auto: on for GPUs and for CPUs where oneDNN "
                            "is off, off where oneDNN runs the CPU's kernels (faster there). Off, with the reason "
                            "printed, where it cannot work (several CPU replicas, --deterministic).")
    steps_per_loop: int = _opt(0, "Train steps per call into TensorFlow, with no host sync between them (never past "
                                  "a progress line, checkpoint or epoch end); 0: 1 on CPUs, as many as that allows on GPUs.")
    distribution: str = _opt("auto", f"{'|'.join(DISTRIBUTIONS)}; auto: multi_worker when TF_CONFIG lists several "
                                     "workers, mirrored over all GPUs (or CPU replicas), else one device.")
    intra_op_threads: int = _opt(0, "Threads of TensorFlow's op pool; 0: TensorFlow's choice, or the cores of the "
                                    "container's CPU quota when there is one.")
    inter_op_threads: int = _opt(0, "Ops TensorFlow runs side by side; 0: TensorFlow's choice (at most 2 under a CPU quota).")
    cpu_replicas: int = _opt(1, "Split the CPU into N logical devices (the multi-replica path without a GPU).")
    cluster_timeout: int = _opt(900, "Multi-worker (TF_CONFIG): seconds to wait at start-up for every worker to join "
                                     "before giving up (exit code 1, 'Timeout' on stderr); 0 waits forever. A worker "
                                     "lost later stops the others within seconds (exit code 5).")
    cluster: str = _opt("auto", f"{'|'.join(CLUSTERS)}: where the workers of a multi-worker job are read from: "
                                "TF_CONFIG (yours, TFJob's, Vertex AI's, Ray's), a Kubernetes Indexed Job or JobSet "
                                "(JOB_COMPLETION_INDEX), a SLURM srun step (SLURM_*), or none (one machine); auto: "
                                "the first the environment describes. Logged in one line at start.")
    cluster_workers: int = _opt(0, "kubernetes: how many workers (0: $TOOLKIT_CLUSTER_WORKERS); with another engine, "
                                   "the count it must describe (0: any).")
    cluster_hosts: str = _opt("", "kubernetes: the workers' addresses, '{index}' standing for 0..N-1, e.g. "
                                  "'train-{index}.train:2222' (empty: $TOOLKIT_CLUSTER_HOSTS, else this pod's own name "
                                  "<name>-<index>.<subdomain> with its index replaced).")
    cluster_port: int = _opt(0, "The workers' port where the engine gives none (0: kubernetes 2222, slurm 8888 and up, "
                                "one per task on a node).", lower_bound=0)
    fresh: bool = _opt(False, "Start anew even if model_dir holds checkpoints (the old run is moved to model_dir/previous-*).")
    log_every: int = _opt(20, "Steps between progress lines and metric records.")
    checkpoint_every: int = _opt(500, "Steps between checkpoints (one is also written at each evaluation, see --eval_every).")
    keep_checkpoints: int = _opt(3, "How many recent checkpoints to keep.")
    eval_every: int = _opt(1, "Epochs between evaluations on the validation split (the last epoch is always evaluated).")
    speed_warmup_steps: int = _opt(5, "Steps left out of the reported images/s (tracing, compilation, pipeline fill).")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What the export writes after training, and how strictly the formats must agree."""

    export: bool = _opt(True, "Export SavedModel + ONNX with the parity gate after training (--noexport to skip).")
    export_dir: str = _opt("", "Where to export; empty: <model_dir>/export.")
    opset: int = _opt(17, f"ONNX opset of the exported model ({MIN_OPSET}-{MAX_OPSET}).")
    onnx_layout: str = _opt("nhwc", f"Input layout of the ONNX model: {' or '.join(LAYOUTS)}.")
    parity_images: int = _opt(0, "Validation images used by the parity gate; 0: all.")
    parity_atol: float = _opt(1e-4, "Largest allowed absolute difference of probabilities between formats.")
    onnx_fp16: bool = _opt(False, "Also write a float16 ONNX model.")
    onnx_int8: bool = _opt(False, "Also write an int8 (static quantization) ONNX model.")
    tflite: bool = _opt(False, "Also write model.tflite (float32, converted from the SavedModel), gated in the LiteRT interpreter.")
    tflite_int8: bool = _opt(False, "Also write model_int8.tflite (int8, calibrated on the ONNX int8 calibration images).")
    triton_repo: str = _opt("", "Also write a Triton model repository (the ONNX model, for Triton's onnxruntime backend) at "
                                "this path inside the export dir, e.g. triton; empty: none.")
    triton_savedmodel: bool = _opt(False, "Also put the SavedModel in the Triton repository (<name>_savedmodel). Triton's "
                                          "TensorFlow backend is deprecated since release 25.03: prefer the ONNX model.")
    triton_max_batch_size: int = _opt(32, "max_batch_size of the Triton models (dynamic batching up to it).")


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    recipe_reason: str = ""  # why --recipe auto picked config.train.recipe (not a flag)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "export": ExportConfig}



class ConfigError(BadInput):
    """A bad setting. The message is one line and names the flag (exit code 2)."""


def validate(config: Config, num_replicas: Optional[int] = None) -> None:
    """Raise ConfigError for values that would fail later; cheap, done before any work."""
    t, d, m = config.train, config.data, config.model

    def need(cond, flag, msg):
        if not cond:
            raise ConfigError(f"--{flag}: {msg}")

    need(t.precision in PRECISIONS, "precision", f"unknown precision {t.precision!r}; choose one of {', '.join(PRECISIONS)}")
    need(t.xla in XLA_MODES, "xla", f"must be one of {', '.join(XLA_MODES)}, got {t.xla!r}")
    need(t.steps_per_loop >= 0, "steps_per_loop", f"must be zero (auto) or positive, got {t.steps_per_loop}")
    need(t.distribution in DISTRIBUTIONS, "distribution", f"unknown distribution {t.distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    need(t.optimizer in OPTIMIZERS, "optimizer", f"unknown optimizer {t.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    need(m.depth in DEPTHS, "depth", f"unsupported depth {m.depth}; choose one of {DEPTHS}")
    need(d.batch_size > 0, "batch_size", f"must be positive, got {d.batch_size}")
    need(d.image_size >= 32, "image_size", f"must be at least 32 (ResNet downsamples 32x), got {d.image_size}")
    need(not d.train_sizes or parse_train_sizes(d.train_sizes) is not None, "train_sizes",
         "must be SIZE@EPOCH entries (sizes at least 32, the first at epoch 1, epochs increasing), e.g. 64@1,96@41; "
         f"got {d.train_sizes!r}")
    need(t.epochs > 0, "epochs", f"must be positive, got {t.epochs}")
    need(t.time_budget >= 0, "time_budget", f"must be zero (no budget) or positive minutes, got {t.time_budget}")
    need(t.steps_per_epoch >= 0, "steps_per_epoch", f"must be zero or positive, got {t.steps_per_epoch}")
    need(t.learning_rate > 0, "learning_rate", f"must be positive, got {t.learning_rate}")
    need(t.warmup_epochs >= 0, "warmup_epochs", f"must be zero or positive, got {t.warmup_epochs}")
    need(t.weight_decay >= 0, "weight_decay", f"must be zero or positive, got {t.weight_decay}")
    need(0 <= t.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    need(0 <= t.momentum < 1, "momentum", f"must be in [0, 1), got {t.momentum}")
    need(t.intra_op_threads >= 0, "intra_op_threads", f"must be zero (auto) or positive, got {t.intra_op_threads}")
    need(t.inter_op_threads >= 0, "inter_op_threads", f"must be zero (auto) or positive, got {t.inter_op_threads}")
    need(t.cpu_replicas >= 1, "cpu_replicas", f"must be at least 1, got {t.cpu_replicas}")
    need(t.cluster in CLUSTERS, "cluster", f"unknown engine {t.cluster!r}; choose one of {', '.join(CLUSTERS)}")
    need(t.cluster_workers >= 0, "cluster_workers", f"must be zero (the engine's count) or positive, got {t.cluster_workers}")
    need(t.cluster_timeout >= 0, "cluster_timeout", f"must be zero (wait forever) or positive, got {t.cluster_timeout}")
    need(t.log_every >= 1, "log_every", f"must be at least 1, got {t.log_every}")
    need(t.checkpoint_every >= 1, "checkpoint_every", f"must be at least 1, got {t.checkpoint_every}")
    need(t.keep_checkpoints >= 1, "keep_checkpoints", f"must be at least 1, got {t.keep_checkpoints}")
    need(t.eval_every >= 1, "eval_every", f"must be at least 1, got {t.eval_every}")
    need(t.speed_warmup_steps >= 0, "speed_warmup_steps", f"must be zero or positive, got {t.speed_warmup_steps}")
    need(m.num_classes >= 0, "num_classes", f"must be positive (or 0 to read it from the data), got {m.num_classes}")
    need(0 < d.crop_min_scale <= 1, "crop_min_scale", f"must be in (0, 1], got {d.crop_min_scale}")
    need(t.model_dir != "", "model_dir", "must be set")
    need(not d.data_dir or storage.isdir(d.data_dir, "data_dir"), "data_dir", f"{d.data_dir} is not a directory")
    need(not m.init_weights or m.init_weights == "imagenet" or os.path.isfile(m.init_weights), "init_weights",
         f"{m.init_weights} does not exist (a .keras or .weights.h5 file, or imagenet)")
    need(m.init_weights != "imagenet" or m.depth in IMAGENET_DEPTHS, "init_weights",
         f"no published ImageNet weights for depth {m.depth} (only {', '.join(map(str, IMAGENET_DEPTHS))}): "
         "use --depth 50 or train from scratch")
    need(t.recipe in RECIPES, "recipe", f"must be one of {', '.join(RECIPES)}, got {t.recipe!r}")
    need(0 <= t.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {t.ema_decay}")
    need(d.mixup_alpha >= 0, "mixup_alpha", f"must be zero (off) or positive, got {d.mixup_alpha}")
    need(d.cutmix_alpha >= 0, "cutmix_alpha", f"must be zero (off) or positive, got {d.cutmix_alpha}")
    need(0 <= d.mix_prob <= 1, "mix_prob", f"must be in [0, 1], got {d.mix_prob}")
    need(0 <= d.mix_switch_prob <= 1, "mix_switch_prob", f"must be in [0, 1], got {d.mix_switch_prob}")
    need(parse_randaugment(d.randaugment) is not None or not d.randaugment, "randaugment",
         f"must be N,M with N ops (1-10) and magnitude M (0-10), e.g. 2,9; got {d.randaugment!r}")
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
    # the repository lives inside the export (placed with it atomically), never over another artifact
    taken = (".", "..", *layout.EXPORT_FILES)
    repo = config.triton_repo
    need(isinstance(repo, str) and (not repo or (not os.path.isabs(repo) and ".." not in repo.split("/")
                                                 and os.path.normpath(repo).split(os.sep)[0] not in taken)),
         "triton_repo", f"must be a new relative path inside the export dir (e.g. triton), got {repo!r}")
    need(isinstance(config.triton_max_batch_size, int) and config.triton_max_batch_size >= 1,
         "triton_max_batch_size", f"must be at least 1, got {config.triton_max_batch_size}")
    if config.export_dir:
        blocker = _file_in_the_way(config.export_dir)
        need(blocker is None, "export_dir", f"{blocker} exists and is not a directory")


def _file_in_the_way(path: str):
    """The nearest existing ancestor of `path` (itself included) when it is not a directory, else None
    (a path on another filesystem, gs:// or ram://, is checked by the export when it writes there)."""
    if not storage.is_local(path):
        return None
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return None if os.path.isdir(path) else path


def parse_train_sizes(value: str):
    """[(first epoch, size), ...] from "SIZE@EPOCH,..." (epochs counted from 1, increasing, the first 1),
    or None when it is not of that form."""
    entries = []
    for part in value.replace(" ", "").split(","):
        size, _, epoch = part.partition("@")
        if not (size.isdigit() and epoch.isdigit()):
            return None
        entries.append((int(epoch), int(size)))
    epochs = [e for e, _ in entries]
    if epochs[0] != 1 or epochs != sorted(set(epochs)) or min(s for _, s in entries) < 32:
        return None
    return entries


def parse_randaugment(value: str):
    """(ops per image, magnitude) from "N,M", or None when it is empty or not of that form."""
    parts = value.replace(" ", "").split(",") if value else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    n, m = int(parts[0]), int(parts[1])
    return (n, m) if 1 <= n <= 10 and 0 <= m <= 10 else None


# ------------------------------------------------------------------------ the other commands' settings
BACKENDS = ("onnx", "savedmodel", "tflite")  # the runtimes an exported model runs in (toolkit.infer.loaders)
MAX_PIXELS = 100_000_000  # larger images are reported, not decoded (3 bytes a pixel, x4 as float32, before the resize)
GRID_IMAGES = 24  # sample images in predictions.png
CONVERT_FORMATS = ("auto", "folder", "tfrecord")
PROGRESS_MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class ExportSource:
    """Which training run `python -m toolkit.export` exports (the ExportConfig fields are its other flags)."""

    model_dir: str = _opt("", "The training directory to export (its run.json, and model.weights.h5 or checkpoints).")
    data_dir: str = _opt("", "Where the parity gate's validation images (and the int8 calibration images) are; "
                             "empty: the run's own data.")


@dataclasses.dataclass(frozen=True)
class ParityConfig:
    """What `python -m toolkit.parity` checks again."""

    export_dir: str = _opt("", "The export to check again (the directory holding export.json).")
    model_dir: str = _opt("", "The training directory to compare with; empty: the one the export sits in (<model_dir>/export).")
    data_dir: str = _opt("", "Where the validation images are; empty: the run's own data.")
    parity_images: int = _opt(0, "Validation images compared; 0: all.")
    parity_atol: float = _opt(1e-4, "Largest allowed absolute difference of probabilities between formats.")


@dataclasses.dataclass(frozen=True)
class InferConfig:
    """What `python -m toolkit.infer` scores, with which model, and where the results go."""

    model: str = _opt("", "An export directory, an .onnx or .tflite file, or a SavedModel directory.")
    inputs: tuple = _opt((), "Directories (read recursively), globs, image files or TFRecord files; repeat the flag or "
                             "list them after the flags.", kind="multi")
    output: str = _opt("", "The results file: .csv or .jsonl (written to a temporary name, then renamed).")
    backend: str = _opt("auto", f"auto|{'|'.join(BACKENDS)}; auto: an export's ONNX model, else what --model is.")
    batch_size: int = _opt(32, "Images per model call.", lower_bound=1)
    threads: int = _opt(0, "Threads of the model's computation; 0: the backend's default (every core).", lower_bound=0)
    top_k: int = _opt(5, "Classes per image in the output (at most the model's).", lower_bound=1)
    max_pixels: int = _opt(MAX_PIXELS, "Larger images are reported, not decoded.", lower_bound=1)
    progress: str = _opt("auto", f"{'|'.join(PROGRESS_MODES)}: a progress bar on stderr; auto: when stderr is a terminal.")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """What `python -m toolkit.evaluate` scores, with which model, and where the reports go."""

    model: str = _opt("", "An export directory, an .onnx or .tflite file, or a SavedModel directory.")
    data: str = _opt("", "An image folder with class subfolders (or train/, val/, test/ folders of them), or a "
                         "directory of TFRecord shards.")
    out: str = _opt("", "Directory for metrics.json, confusion_matrix.png/.json and predictions.png/.csv.")
    split: str = _opt("val", "Split to read: val (or validation) or test, from shards (val-*, test-*) or from a folder "
                             "holding train/, val/, test/.")
    backend: str = _opt("auto", f"auto|{'|'.join(BACKENDS)}; auto: an export's ONNX model, else what --model is.")
    batch_size: int = _opt(32, "Images per model call.", lower_bound=1)
    threads: int = _opt(0, "Threads of the model's computation; 0: the backend's default.", lower_bound=0)
    label_offset: int = _opt(0, "Subtracted from stored labels (1 for ImageNet-style shards).")
    grid_images: int = _opt(GRID_IMAGES, "Images in predictions.png (0: none).", lower_bound=0)
    max_pixels: int = _opt(MAX_PIXELS, "Larger images are reported, not decoded.", lower_bound=1)


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """What `python -m toolkit.data.convert` reads and writes."""

    src: str = _opt("", "Image folder (SRC/<class>/, or SRC/train/<class>/ with optional SRC/val/<class>/ and "
                        "SRC/test/<class>/), or a directory of TFRecord shards.")
    out: str = _opt("", "Output directory for shards, labels.txt and manifest.json.")
    src_format: str = _opt("auto", f"{'|'.join(CONVERT_FORMATS)}: what --src holds; auto: TFRecords if it has "
                                   "train-*/validation-* files or a manifest.")
    tfds_name: str = _opt("", "Convert this tensorflow-datasets dataset (prepared in --tfds_data_dir) instead of --src.")
    tfds_data_dir: str = _opt("", "Local TFDS data dir holding --tfds_name; nothing is downloaded.")
    tfds_train_split: str = _opt("train", "TFDS split to use for training.")
    tfds_val_split: str = _opt("", "TFDS split to use for validation; empty: validation/val, else --val_fraction of "
                                   "train (a TFDS test split becomes the test split, never validation, unless named here).")
    tfds_image_key: str = _opt("image", "TFDS image feature.")
    tfds_label_key: str = _opt("label", "TFDS ClassLabel feature.")
    val_fraction: float = _opt(0.1, "Validation fraction per class drawn from train when the source has no validation "
                                    "split (a test split is never used for validation).")
    shard_size: int = _opt(1024, "At most this many images per shard.", lower_bound=1)
    min_shards: int = _opt(8, "At least this many shards per split (fewer only if a split has fewer images), so up to "
                              "this many workers each read their own files.", lower_bound=1)
    workers: int = _opt(0, "Parallel worker processes; 0: every core.", lower_bound=0)
    max_side: int = _opt(0, "Downscale images whose SHORTER side exceeds this to exactly this (aspect kept); 0: keep "
                            "sizes. 256 suits a 224 model and speeds up the input pipeline (BENCHMARKS.md).", lower_bound=0)
    jpeg_quality: int = _opt(90, "JPEG quality of re-encoded images (converted formats, --max_side).", lower_bound=1)
    label_offset: int = _opt(0, "TFRecord sources: subtracted from stored labels (1 for shards that count labels from 1).")
    seed: int = _opt(0, "Seed of the validation split and of the storage order.")
    overwrite: bool = _opt(False, "Replace an existing output directory (only one that holds a manifest.json).")
    progress: bool = _opt(True, "Show a progress bar.")

