"""The train and eval steps for every strategy (the loop that calls them is toolkit.train.run.fit).

`strategy.run` over distributed datasets, loss averaged over the GLOBAL batch
(`tf.nn.compute_average_loss`), gradients all-reduced by the optimizer, a LossScaleOptimizer under
fp16, an optionally XLA-compiled replica step. Metrics are returned as per-replica sums and reduced
across replicas, so they are exact with partial evaluation batches and any replica count.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from toolkit.common.errors import BadInput
from toolkit.train.optim import decayed_variables


class Trainer:
    """Compiled train and eval steps for one model, optimizer and strategy."""

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        global_batch_size: int,
        num_classes: int,
        label_smoothing: float = 0.0,
        l2: float = 0.0,
        xla: bool = False,
        ema=None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.l2 = l2
        self.ema = ema  # toolkit.train.ema.WeightAverage or None
        self.loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self._replica_train = tf.function(self._replica_train_step, jit_compile=xla or None)
        self._replica_evals = {}  # id(model) -> its replica eval step
        self.train_step = tf.function(self._distributed_train_step)
        self._train_loop = tf.function(self._distributed_train_loop)
        self._eval_steps = {}  # element spec -> eval step traced once for it
        self._bn_statistics = [
            v for m in (model, ema.average if ema else None) if m is not None
            for v in m.non_trainable_variables if v.path.endswith(("moving_mean", "moving_variance"))
        ]
        self._sync_statistics = tf.function(lambda: self.strategy.run(self._replica_sync_statistics))

    def per_example_loss(self, labels, logits):
        """Cross-entropy of logits against int labels [b], or soft labels [b, classes] (mixup, CutMix)."""
        if labels.shape.rank == 2:
            onehot = tf.cast(labels, tf.float32)
        else:
            onehot = tf.one_hot(labels, self.num_classes, dtype=tf.float32)
        if self.label_smoothing:
            onehot = onehot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        return tf.nn.softmax_cross_entropy_with_logits(onehot, tf.cast(logits, tf.float32))

    def _replica_train_step(self, images, labels):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = tf.nn.compute_average_loss(self.per_example_loss(labels, logits), global_batch_size=self.global_batch_size)
            if self.l2:
                penalty = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in decayed_variables(self.model)])
                loss += 0.5 * self.l2 * penalty / self.strategy.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss) if self.loss_scaling else loss
        grads = tape.gradient(scaled, variables)
        if self.loss_scaling and self.strategy.num_replicas_in_sync > 1:
            grads = _agree_on_finiteness(grads)
        self.optimizer.apply(grads, variables)
        hard = tf.argmax(labels, axis=-1, output_type=tf.int32) if labels.shape.rank == 2 else labels
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), hard), tf.float32))
        return {"loss": loss, "correct": correct}

    def _distributed_train_step(self, batch):
        images, labels = batch
        per_replica = self.strategy.run(self._replica_train, args=(images, labels))
        if self.ema is not None:
            self.ema.update(self.optimizer.iterations)
        # loss: already divided by the global batch, so the sum over replicas is the global mean;
        # correct: training top-1 hits of the global batch (under augmentation, in training mode)
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def _distributed_train_loop(self, iterator, steps):
        losses = tf.TensorArray(tf.float32, size=steps)
        hits = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            out = self._distributed_train_step(next(iterator))
            losses = losses.write(i, out["loss"])
            hits = hits.write(i, out["correct"])
        return {"loss": losses.stack(), "correct": hits.stack()}

    def train_steps(self, iterator, steps: int) -> dict:
        """Run `steps` train steps from `iterator` in one call, without stopping at the host between them.

        Returns {"loss": [steps], "correct": [steps]} of each step, kept on the device until the
        end: one host sync per call instead of one per step (what a GPU needs to stay busy).
        The number of steps is a tensor argument, so every chunk length shares one trace.
        """
        return self._train_loop(iterator, tf.constant(steps, tf.int32))

    def _replica_sync_statistics(self):
        # identity: a variable's read is colocated with it and has no device of its own, and
        # MultiWorkerMirroredStrategy all-reduces to the device of each input
        local = [tf.identity(tf.convert_to_tensor(v.value)) for v in self._bn_statistics]
        means = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, local)
        for v, mean in zip(self._bn_statistics, means):
            v.assign(mean)  # aggregation "none": each replica sets its own copy, all to the same mean

    def sync_batchnorm_statistics(self) -> None:
        """Average BatchNorm's moving means and variances across all replicas (of all workers).

        Keras 3 creates them without cross-replica aggregation, so under a strategy every replica
        updates its own copy from its own batches and the copies drift apart: replicas would
        evaluate with different statistics, workers would end with different weights and a
        checkpoint would keep only the first replica's. The moving averages are linear in the batch
        statistics, so averaging the copies gives exactly the moving average of the replica-averaged
        batch statistics, as if every step had synchronized them, for one all-reduce per call.
        Call it before evaluating and before saving; every worker must call it (a collective).
        """
        if self.strategy.num_replicas_in_sync > 1 and self._bn_statistics:
            self._sync_statistics()

    def _replica_eval_step(self, model, images, labels):
        def sums():
            logits = tf.cast(model(images, training=False), tf.float32)
            loss = tf.reduce_sum(self.per_example_loss(labels, logits))
            top1 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32))
            top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, min(5, self.num_classes)), tf.float32))
            return tf.stack([loss, top1, top5, tf.cast(tf.shape(labels)[0], tf.float32)])

        # A replica handed an empty batch (the partial last batch split over replicas, a worker
        # whose share of the files ran out) must not run the model: with oneDNN on, a convolution
        # of a zero-size batch returns its input unchanged and the next layer fails on the shape.
        return tf.cond(tf.shape(labels)[0] > 0, sums, lambda: tf.zeros([4]))

    def _distributed_eval_step(self, model, batch):
        images, labels = batch
        if id(model) not in self._replica_evals:
            self._replica_evals[id(model)] = tf.function(lambda x, y: self._replica_eval_step(model, x, y))
        sums = self.strategy.run(self._replica_evals[id(model)], args=(images, labels))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    def eval_step_for(self, element_spec, model=None):
        """The eval step traced once for a dataset's element spec (batch dimension unknown).

        A fixed signature keeps one trace for full and partial batches, and lets a replica receive
        the empty batch that a multi-worker iterator hands to workers whose share of the
        validation files has run out while others still have data: traced with a static batch of
        0, the model fails to build.
        """
        model = model or self.model
        key = (id(model), repr(element_spec))
        if key not in self._eval_steps:
            self._eval_steps[key] = tf.function(lambda batch: self._distributed_eval_step(model, batch),
                                                input_signature=[element_spec])
        return self._eval_steps[key]

    def evaluate(self, dist_dataset, model=None) -> dict:
        """Loss, top-1 and top-5 of `model` (default: the trained model) over a distributed evaluation dataset."""
        eval_step = self.eval_step_for(dist_dataset.element_spec, model)
        totals = tf.zeros([4])
        for batch in dist_dataset:
            totals += eval_step(batch)
        return _eval_result(totals)

    def evaluate_here(self, dataset: tf.data.Dataset, model=None) -> dict:
        """As `evaluate`, in this process alone (no strategy, no collectives), over a plain dataset:
        for what the chief evaluates by itself, such as the test split at the end."""
        model = model or self.model
        step = tf.function(lambda images, labels: self._replica_eval_step(model, images, labels))
        totals = tf.zeros([4])
        for images, labels in dataset:
            totals += step(images, labels)
        return _eval_result(totals)


def _eval_result(totals) -> dict:
    loss, top1, top5, count = (float(x) for x in totals.numpy())
    if count == 0:
        raise BadInput("--data_dir: the split to evaluate is empty")
    return {"val_loss": loss / count, "val_top1": top1 / count, "val_top5": top5 / count, "val_images": int(count)}


def _agree_on_finiteness(grads):
    """Make every replica see non-finite gradients when any replica has them.

    LossScaleOptimizer decides per replica whether to apply or skip a step; with several replicas
    one overflowing replica would skip while the others apply, and the replicas would diverge
    (keras-team/keras#18666, #21366). One scalar all-reduce keeps them in lockstep.
    """
    local_bad = tf.add_n([tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32)) for g in grads if g is not None])
    global_bad = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local_bad)
    poison = tf.where(global_bad > 0, tf.constant(float("nan")), tf.constant(0.0))
    return [None if g is None else g + tf.cast(poison, g.dtype) for g in grads]
