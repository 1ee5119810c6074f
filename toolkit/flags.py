"""Every absl flag of the trainer, grouped; `to_config()` turns them into a frozen Config once.

Only entry points import this module. With no --data_dir the built-in demo dataset is used, and
flags the user did not set take the demo's defaults (DEMO_DEFAULTS) so that the plain
`python -m toolkit.train` finishes in minutes on a laptop CPU.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from toolkit import config as cfg

FLAGS = flags.FLAGS

# --- data
flags.DEFINE_string("data_dir", "", "Directory of TFRecord shards (from toolkit.data.convert); empty: the built-in demo dataset.")
flags.DEFINE_integer("image_size", 224, "Square input size in pixels, at least 32 (demo default: 32).")
flags.DEFINE_integer("batch_size", 64, "GLOBAL batch size, split evenly across all replicas of all workers (demo default: 32).")
flags.DEFINE_integer("label_offset", 0, "Subtracted from stored labels, e.g. 1 for ImageNet shards that number classes 1..1000.")
flags.DEFINE_float("crop_min_scale", 0.08, "Smallest area fraction of a random-resized training crop (demo default: 0.25).")
flags.DEFINE_bool("cache", False, "Cache the encoded records in memory (small datasets).")
flags.DEFINE_integer("shuffle_buffer", 2048, "Records in the shuffle buffer of each input pipeline.")

# --- model
flags.DEFINE_integer("depth", 50, "ResNetV2 depth: 50, 101 or 152.")
flags.DEFINE_integer("num_classes", 0, "Number of classes; 0 reads it from the data's labels.")
flags.DEFINE_string("init_weights", "", "Start from these weights (.keras or .weights.h5); a head of another shape is re-initialized.")
flags.DEFINE_bool("freeze_backbone", False, "Train only the classification head (fine-tuning).")
flags.DEFINE_bool("sync_batchnorm", False, "Synchronize BatchNorm statistics across replicas.")

# --- optimization
flags.DEFINE_string("model_dir", "runs/default", "Where checkpoints, logs, plots, the summary and exports go; re-running resumes from it.")
flags.DEFINE_integer("epochs", 90, "Training epochs (demo default: 3).")
flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch; 0: one pass over the training split.")
flags.DEFINE_enum("optimizer", "sgd", list(cfg.OPTIMIZERS), "sgd (with momentum), adam or adamw.")
flags.DEFINE_float("learning_rate", 0.1, "Peak learning rate after warmup (demo default: 0.05).")
flags.DEFINE_float("momentum", 0.9, "Momentum of the sgd optimizer (ignored by adam and adamw).")
flags.DEFINE_float("warmup_epochs", 5.0, "Epochs of linear warmup before the cosine decay (demo default: 1).")
flags.DEFINE_float("weight_decay", 5e-5, "Weight decay of kernels (decoupled for sgd/adamw, L2 loss for adam).")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing for the cross-entropy.")

# --- hardware
flags.DEFINE_string("precision", "auto", "auto|fp32|fp16|bf16; auto: fp16 on GPUs of compute capability >= 7.0, bf16 on CPUs with AVX512_BF16/AMX, else fp32.")
flags.DEFINE_bool("xla", True, "XLA-compile the train step (1.7x the images/s of ResNet50V2 on a 2-core CPU; turned off, with the reason printed, where it cannot work; --noxla to skip the compile).")
flags.DEFINE_string("distribution", "auto", "auto|mirrored|multi_worker|one_device; auto: multi_worker when TF_CONFIG lists several workers, mirrored over all GPUs (or CPU replicas), else one device.")
flags.DEFINE_integer("cpu_replicas", 1, "Split the CPU into N logical devices (the multi-replica path without a GPU).")
flags.DEFINE_integer("cluster_timeout", 900, "Multi-worker (TF_CONFIG): seconds to wait at start-up for every worker to join before giving up (exit code 1, 'Timeout' on stderr); 0 waits forever. A worker lost later stops the others within seconds.")

# --- run control
flags.DEFINE_integer("seed", 0, "Seed for initialization, shuffling and augmentation.")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and input order: a killed and resumed run ends with the same weights.")
flags.DEFINE_bool("fresh", False, "Start anew even if model_dir holds checkpoints (the old run is moved to model_dir/previous-*).")
flags.DEFINE_integer("log_every", 20, "Steps between progress lines and metric records.")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints (one is also written at each epoch end).")
flags.DEFINE_integer("keep_checkpoints", 3, "How many recent checkpoints to keep.")

# --- export
flags.DEFINE_bool("export", True, "Export SavedModel + ONNX with the parity gate after training (--noexport to skip).")
flags.DEFINE_string("export_dir", "", "Where to export; empty: <model_dir>/export.")
flags.DEFINE_integer("opset", 17, "ONNX opset of the exported model.")
flags.DEFINE_enum("onnx_layout", "nhwc", ["nhwc", "nchw"], "Input layout of the ONNX model.")
flags.DEFINE_integer("parity_images", 0, "Validation images used by the parity gate; 0: all.")
flags.DEFINE_float("parity_atol", 1e-4, "Largest allowed absolute difference of probabilities between formats.")
flags.DEFINE_bool("onnx_fp16", False, "Also write a float16 ONNX model.")
flags.DEFINE_bool("onnx_int8", False, "Also write an int8 (static quantization) ONNX model.")

# Flags the demo dataset sets differently when the user leaves them alone.
DEMO_DEFAULTS = {
    "image_size": 32,
    "batch_size": 32,
    "epochs": 3,
    "learning_rate": 0.05,
    "warmup_epochs": 1.0,
    "crop_min_scale": 0.25,
}


def _value(name: str):
    if not FLAGS.data_dir and name in DEMO_DEFAULTS and not FLAGS[name].present:
        return DEMO_DEFAULTS[name]
    return FLAGS[name].value


def _section(cls):
    """A config section from the flags named like its fields (fields without a flag keep their default)."""
    return cls(**{f.name: _value(f.name) for f in dataclasses.fields(cls) if f.name in FLAGS})


def to_config() -> cfg.Config:
    """Build the frozen Config from the parsed flags, and validate it (ConfigError names the flag).

    Flags and config fields share their names: --batch_size is DataConfig.batch_size, and so on
    (--seed and --deterministic feed both the data and the training sections).
    """
    config = cfg.Config(
        data=_section(cfg.DataConfig),
        model=_section(cfg.ModelConfig),
        train=_section(cfg.TrainConfig),
        export=_section(cfg.ExportConfig),
    )
    cfg.validate(config)
    return config
