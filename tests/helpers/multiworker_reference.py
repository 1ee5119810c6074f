"""The single-process reference of a 2-worker run (run in a subprocess; prints one JSON line).

    python tests/helpers/multiworker_reference.py OUT.weights.h5 [the workers' toolkit.train flags]

One process on one device trains on the same global batches as the two workers, split the same
way: each step runs the model once on worker 0's batch and once on worker 1's (each read by the
real `make_train_dataset` with that worker's input context), so BatchNorm normalizes each half
by its own statistics as each worker's replica does; the loss is averaged over the global batch
and one optimizer step applies the summed gradient, as the all-reduce does. BatchNorm's moving
statistics are updated from each half separately and averaged, which is what the trainer's
cross-replica averaging gives. Model, seed, optimizer, schedule and loss come from the product
(`toolkit.flags`, `toolkit.train.run`, `toolkit.train.steps`, `toolkit.models`).

Why not `python -m toolkit.train --cpu_replicas=2` as the reference: two replicas in one process
sum in another order than one device does, and a fresh ResNet50V2 trained with BatchNorm on a few
images per replica is chaotic: the rounding differences grow to visible ones within a few steps.
(Measured: perturbing the initial weights by 1e-7, relative, moves the one-device loss at step 2
from 2.0304 to 2.1067; MirroredStrategy's step 2 gives 2.0302, and its first step is equal to the
one-device step; tests/test_distributed.py checks that first step.) The two workers here happen
to reduce in the same order as this reference and match it to float precision.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tensorflow as tf  # noqa: E402

from toolkit import flags as flags_lib  # noqa: E402
from toolkit.train import distribute  # noqa: E402
from toolkit.train import steps as loop
from toolkit.train import optim
from toolkit.train import session
from toolkit.data import pipeline, shards  # noqa: E402
from toolkit.models import resnet_v2  # noqa: E402

NUM_WORKERS = 2


def main():
    out_path = sys.argv[1]
    os.environ.pop("TF_CONFIG", None)
    flags_lib.FLAGS([sys.argv[0], *sys.argv[2:]])
    config = flags_lib.to_config()
    t, d, m = config.train, config.data, config.model
    assert t.precision == "fp32" and t.optimizer == "sgd", "the reference covers the fp32 sgd case"
    distribute.set_precision_policy("fp32")
    session.seed_everything(d.seed, d.deterministic)  # as toolkit.train.session.setup does before building the model

    info = shards.read_dataset_info(d.data_dir)
    num_classes = m.num_classes or info.num_classes
    steps = t.steps_per_epoch * t.epochs
    model = resnet_v2.build_model(num_classes, d.image_size, m.depth, m.sync_batchnorm, m.freeze_backbone)
    optimizer = optim.make_optimizer(t, t.steps_per_epoch, "fp32")
    optim.build_optimizer_state(optimizer, model)
    helper = loop.Trainer(model, optimizer, tf.distribute.get_strategy(), d.batch_size, num_classes, t.label_smoothing)
    statistics = [v for v in model.non_trainable_variables if v.path.endswith(("moving_mean", "moving_variance"))]

    per_worker = [
        iter(pipeline.make_train_dataset(d, info.split_files("train"), t.steps_per_epoch,
                                         tf.distribute.InputContext(NUM_WORKERS, k, NUM_WORKERS)))
        for k in range(NUM_WORKERS)
    ]

    @tf.function
    def train_step(halves):
        before = [tf.identity(v.value) for v in statistics]
        updated = []
        with tf.GradientTape() as tape:
            loss = 0.0
            for images, labels in halves:
                for v, value in zip(statistics, before):
                    v.assign(value)
                logits = model(images, training=True)
                loss += tf.reduce_sum(helper.per_example_loss(labels, logits)) / d.batch_size
                updated.append([tf.identity(v.value) for v in statistics])
        for i, v in enumerate(statistics):
            v.assign(tf.add_n([u[i] for u in updated]) / len(updated))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    losses = [float(train_step(tuple(next(it) for it in per_worker))) for _ in range(steps)]
    model.save_weights(out_path)
    print(json.dumps({"losses": losses}))


if __name__ == "__main__":
    main()
