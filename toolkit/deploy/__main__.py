"""python -m toolkit.deploy ENGINE: a multi-worker training job for a cluster engine, filled in from flags.

  python -m toolkit.deploy ENGINE [--name NAME] [--image IMAGE] [--workers N] [--gpus_per_worker G]
      --model_dir RUN --data_dir DATA [--output FILE] [-- TRAINER_FLAG ...]

ENGINE is one of
  jobset       a Kubernetes JobSet (needs the JobSet controller): pods NAME-workers-0-<i>.NAME
  indexed_job  a Kubernetes Indexed Job + headless Service (plain Kubernetes 1.33+): pods NAME-<i>.NAME
  tfjob        a Kubeflow Training Operator v1 TFJob (legacy): the operator writes TF_CONFIG
  slurm        an sbatch script: one srun task per node, all of its GPUs
  vertex       a Vertex AI CustomJobSpec for `gcloud ai custom-jobs create --config`

Every worker runs `python3 -m toolkit.train` with --model_dir, --data_dir and the flags after `--`,
and finds the others the engine's way (--cluster kubernetes, slurm or tf_config). --model_dir (and
--data_dir) must be storage every worker sees at the same path: gs://..., a ReadWriteMany claim
mounted with --volume, a shared filesystem under SLURM. The job restarts the workers after a lost
worker (exit code 5) or a preemption (8), up to --max_restarts times, each time resuming from the
last checkpoint; bad input (2), a diverged run (3) and the other permanent codes fail it at once
where the engine can tell them apart (the comments at the top of the output say how each does).

Examples:
  # 4 pods with 8 GPUs each, the run on Cloud Storage
  python -m toolkit.deploy jobset --name resnet50 --image registry.example.com/toolkit:gpu --workers 4 \\
      --gpus_per_worker 8 --model_dir gs://bucket/runs/resnet50 --data_dir gs://bucket/imagenet \\
      --output resnet50.yaml -- --recipe imagenet --batch_size 2048 --epochs 90
  kubectl apply -f resnet50.yaml

  # plain Kubernetes, the run on a ReadWriteMany claim
  python -m toolkit.deploy indexed_job --image registry.example.com/toolkit:gpu --workers 2 --gpus_per_worker 1 \\
      --volume toolkit-runs:/runs --volume imagenet-shards:/data:ro --model_dir /runs/mw --data_dir /data

  # SLURM: 2 nodes with 4 GPUs each
  python -m toolkit.deploy slurm --workers 2 --gpus_per_worker 4 --model_dir /shared/runs/mw \\
      --data_dir /shared/shards --output train.sbatch -- --epochs 30 --batch_size 256
  sbatch train.sbatch

  # Vertex AI: a chief and 3 workers on n1-standard-16 with 4 T4s each
  python -m toolkit.deploy vertex --image us-docker.pkg.dev/PROJECT/repo/toolkit:gpu --workers 4 \\
      --gpus_per_worker 4 --machine_type n1-standard-16 --model_dir gs://bucket/runs/v1 \\
      --data_dir gs://bucket/shards --output vertex.yaml
  gcloud ai custom-jobs create --region us-central1 --display-name toolkit-train --config vertex.yaml
"""

from __future__ import annotations

import shlex
import sys
from typing import Sequence

from toolkit import cli, jobs
from toolkit.common.errors import BadInput

SECTIONS = (jobs.DeployConfig,)


def split_arguments(positional: Sequence[str], raw_argv: Sequence[str]) -> tuple:
    """(ENGINE, the trainer's flags) from the arguments absl left: the trainer's are those after `--`."""
    after = len(raw_argv) - raw_argv.index("--") - 1 if "--" in raw_argv else 0
    before, train_args = list(positional[:len(positional) - after]), list(positional[len(positional) - after:])
    if not before:
        raise BadInput(f"ENGINE: missing; give one of {', '.join(jobs.DEPLOY_ENGINES)} (see --help)")
    if len(before) > 1:
        raise BadInput(f"unexpected arguments: {' '.join(before[1:])} (the trainer's flags go after `--`)")
    return before[0], train_args


def main(argv) -> None:
    from absl import flags

    from toolkit.deploy import render

    c = jobs.DeployConfig(**cli.values_of(jobs.DeployConfig, flags.FLAGS))
    engine, train_args = split_arguments(argv, sys.argv)
    command_line = "python -m toolkit.deploy " + shlex.join(sys.argv[1:])
    render.write(render.render(engine, c, train_args, command_line), c.output)


def run_main() -> None:
    cli.run(__doc__, SECTIONS, main, positional=True)


if __name__ == "__main__":
    run_main()
