"""tf.data input pipelines over TFRecord shards, aware of tf.distribute input contexts.

Training: file-level sharding per input pipeline (worker), parallel interleave, optional cache,
seeded shuffle, an exact number of batches per epoch, decode-and-crop + flip + resize
(+ RandAugment) + normalize, batch with drop_remainder (+ mixup/CutMix per batch), prefetch.
One dataset spans every remaining epoch so a cache survives epoch boundaries and a resume can
start mid-epoch (`skip_steps`).

Evaluation: the same shards read in order, `preprocess.eval_input` (center crop, no randomness),
partial last batch kept.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from toolkit.common import machine
from toolkit.common.errors import BadInput
from toolkit.config import DataConfig, parse_randaugment, parse_train_sizes
from toolkit.data import augment, mixing, preprocess, schema

AUTOTUNE = tf.data.AUTOTUNE
READ_BUFFER_BYTES = 8 << 20
MAX_EPOCHS = 1 << 20  # "until the loop stops"; the loop knows the real count


def _pipeline_position(input_context: Optional[tf.distribute.InputContext]):
    if input_context is None:
        return 1, 0, 1
    return (
        input_context.num_input_pipelines,
        input_context.input_pipeline_id,
        input_context.num_replicas_in_sync // input_context.num_input_pipelines,
    )


def _per_replica_batch(config: DataConfig, input_context) -> int:
    if input_context is None:
        return config.batch_size
    return input_context.get_per_replica_batch_size(config.batch_size)


def _shard_files(files: Sequence[str], num_pipelines: int, pipeline_id: int) -> list:
    files = sorted(files)
    if num_pipelines > 1:
        if len(files) < num_pipelines:
            raise BadInput(
                f"--data_dir: {len(files)} shard file(s) of a split cannot be split across {num_pipelines} "
                "workers; convert with more, smaller shards (toolkit.data.convert --shard_size)"
            )
        files = files[pipeline_id::num_pipelines]
    return files


def _read_records(files, config: DataConfig, shuffle_seed=None) -> tf.data.Dataset:
    files = tf.constant(list(files))
    if shuffle_seed is not None:
        files = tf.random.experimental.stateless_shuffle(files, seed=shuffle_seed)
    return tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=READ_BUFFER_BYTES),
        cycle_length=min(len(files), 16),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=config.deterministic or None,
    )


def _block_shuffle(records: tf.data.Dataset, block: int, seed) -> tf.data.Dataset:
    """Shuffle within consecutive blocks of `block` records, with a stateless (tensor) seed.

    tf.data's shuffle takes no tensor seed inside flat_map; stateless blocks make each epoch's
    order a pure function of (seed, epoch), which is what exact resume needs. With files
    shuffled per epoch and interleaved, blocks mix as well as a shuffle buffer of the same size.
    """
    blocks = records.batch(block).enumerate()
    shuffled = blocks.map(
        lambda i, b: tf.random.experimental.stateless_shuffle(b, seed=tf.stack([seed[0], seed[1] * 1000003 + i]))
    )
    return shuffled.unbatch()


def decode_threads() -> int:
    """Parallel decodes for a pipeline that runs without tf.data's autotuning: the usable cores
    (the process's CPU affinity, capped by a container's CPU quota)."""
    return machine.usable_cores()


def without_autotune() -> tf.data.Options:
    """Options for a one-pass pipeline whose iterator is dropped at its end (evaluation, inference).

    With autotuning on, destroying a tf.data iterator waits for the autotuner's thread, which in
    TF 2.21 sometimes sleeps out its optimization period first: up to 10 s at the end of each pass
    (BENCHMARKS.md, "Measurements behind code choices"). Without it there is no such thread; its
    parallelism and buffers must then be given explicitly.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _options(config: DataConfig) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = config.deterministic
    options.experimental_optimization.map_parallelization = True
    # each pipeline already reads its own files; don't let tf.distribute re-shard by data
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def make_train_dataset(
    config: DataConfig,
    files: Sequence[str],
    steps_per_epoch: int,
    input_context: Optional[tf.distribute.InputContext] = None,
    start_epoch: int = 0,
    skip_steps: int = 0,
    num_classes: int = 0,
) -> tf.data.Dataset:
    """Batches of (normalized images, labels) for every epoch from `start_epoch` on.

    Each epoch yields exactly `steps_per_epoch` batches per replica (files of a short shard wrap
    around), so every worker agrees on when an epoch ends. Labels are int32 [b] class ids, or,
    when mixup or CutMix is on, float32 [b, num_classes] soft labels (toolkit.data.mixing; every
    batch, mixed or not). Augmentation and mixing seeds follow from (seed, epoch, position), so
    a resume with `skip_steps` yields exactly the batches the uninterrupted run would have.

    Args:
      config: the DataConfig (image size, batch size, augmentation, seed, reader settings).
      files: the training shards.
      steps_per_epoch: batches per epoch and replica.
      input_context: this input pipeline's place among all (None: the only one).
      start_epoch: the first epoch to yield (its shuffle and augmentation seeds follow from it).
      skip_steps: the first steps of `start_epoch` dropped without decoding them: the exact
        resume point of a checkpoint.
      num_classes: the number of classes; needed (> 0) only when mixing is on.

    Returns:
      An infinite tf.data.Dataset.

    Raises:
      ValueError: mixing is on and num_classes is not positive.
    """
    mix = mixing.from_config(config, num_classes)
    num_pipelines, pipeline_id, replicas_here = _pipeline_position(input_context)
    batch = _per_replica_batch(config, input_context)
    records_per_epoch = steps_per_epoch * batch * replicas_here
    files = _shard_files(files, num_pipelines, pipeline_id)
    seed = int(config.seed)
    image_size = _size_of_epoch(config)

    cached = None
    if config.cache:
        cached = _read_records(files, config).cache()

    def epoch_records(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        records = cached if cached is not None else _read_records(files, config, shuffle_seed=epoch_seed)
        records = _block_shuffle(records, config.shuffle_buffer, epoch_seed)
        records = records.repeat().take(records_per_epoch).enumerate()
        return records.map(lambda i, r: (epoch, i, r))

    ds = tf.data.Dataset.range(start_epoch, MAX_EPOCHS).flat_map(epoch_records)
    if skip_steps:
        ds = ds.skip(skip_steps * batch * replicas_here)

    randaugment = parse_randaugment(config.randaugment)

    def parse(epoch, index, record):
        ex = schema.parse_example(record)
        element_seed = tf.stack([seed * 1000003 + epoch, index + pipeline_id * (1 << 40)])
        image = augment.train_image(ex[schema.ENCODED], image_size(epoch), element_seed, config.crop_min_scale, randaugment)
        label = tf.cast(ex[schema.LABEL] - config.label_offset, tf.int32)
        if mix is None:
            return preprocess.normalize(image), label
        return preprocess.normalize(image), label, epoch, index

    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=config.deterministic or None)
    ds = ds.batch(batch, drop_remainder=True)
    if mix is not None:
        ds = ds.map(_mixer(mix, seed, pipeline_id, batch), num_parallel_calls=AUTOTUNE,
                    deterministic=config.deterministic or None)
    return ds.prefetch(AUTOTUNE).with_options(_options(config))


def _size_of_epoch(config: DataConfig):
    """epoch (from 0, a tensor) -> the training image size: --image_size, or --train_sizes' entry.

    With one size the batches keep a static shape; with several their height and width are
    unknown to the graph (the model is then built for any size, toolkit.train.session).
    """
    entries = parse_train_sizes(config.train_sizes) if config.train_sizes else None
    if not entries:
        return lambda epoch: config.image_size
    if len(entries) == 1:
        return lambda epoch: entries[0][1]
    firsts = tf.constant([first - 1 for first, _ in entries], tf.int64)
    sizes = tf.constant([size for _, size in entries], tf.int32)
    return lambda epoch: sizes[tf.reduce_sum(tf.cast(firsts <= epoch, tf.int32)) - 1]


def _mixer(mix: mixing.MixSettings, seed: int, pipeline_id: int, batch: int):
    """The per-batch map of mixing: the batch's seed from its epoch and its index in the epoch.

    An epoch holds a whole number of batches, so a batch's records share one epoch and
    index // batch is the batch's index within the epoch, unchanged by a resume's skip.
    """

    def mix_batch(images, labels, epochs, indices):
        key = mixing.batch_seed(seed, epochs[0], tf.reduce_min(indices) // batch, pipeline_id)
        return mixing.mix_batch(images, labels, key, mix)

    return mix_batch


def make_eval_dataset(
    config: DataConfig,
    files: Sequence[str],
    input_context: Optional[tf.distribute.InputContext] = None,
) -> tf.data.Dataset:
    """Batches of (normalized images, int32 labels): center crop, fixed order, last batch kept.

    Args:
      config: the DataConfig (image size, batch size, label offset, reader settings).
      files: the validation shards (read interleaved, one record from each in turn).
      input_context: this input pipeline's place among all; each reads its own share of files.

    Returns:
      A finite tf.data.Dataset (one pass).
    """
    num_pipelines, pipeline_id, _ = _pipeline_position(input_context)
    files = _shard_files(files, num_pipelines, pipeline_id)
    config_in_order = DataConfig(**{**config.__dict__, "deterministic": True})
    ds = _read_records(files, config_in_order)
    image_size = config.image_size

    def parse(record):
        ex = schema.parse_example(record)
        label = tf.cast(ex[schema.LABEL] - config.label_offset, tf.int32)
        return preprocess.eval_input(ex[schema.ENCODED], image_size), label

    ds = ds.map(parse, num_parallel_calls=decode_threads(), deterministic=True)
    ds = ds.batch(_per_replica_batch(config, input_context))
    return ds.prefetch(2).with_options(_options(config_in_order)).with_options(without_autotune())
