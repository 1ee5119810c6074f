"""python -m toolkit.ray: train on N Ray workers through Ray Train (pip install .[ray]).

  python -m toolkit.ray --workers=2 -- --data_dir=/shared/shards --model_dir=/shared/runs/r1 --epochs=30
  python -m toolkit.ray --address=auto --workers=8 --gpus_per_worker=1 -- --data_dir=gs://b/d --model_dir=gs://b/r

The flags before "--" are the launcher's; those after it are toolkit.train's, checked here before Ray
starts. Each worker runs toolkit.train with the TF_CONFIG Ray Train gives it; a lost worker makes
Ray restart them all, and they resume from --model_dir's last checkpoint (toolkit/ray/launcher.py).
--model_dir must be storage every worker sees. Without --address a Ray of its own starts on this
machine; --address=auto joins the running cluster (ray start).
"""

from __future__ import annotations

import os

from toolkit import cli, jobs


def main(argv) -> None:
    from absl import flags

    from toolkit import flags as trainer_flags
    from toolkit.common.errors import BadInput
    from toolkit.common.logs import log
    from toolkit.ray import launcher

    ray_config = jobs.RayConfig(**cli.values_of(jobs.RayConfig, flags.FLAGS))
    fv = flags.FlagValues()
    cli.define_flags(trainer_flags.SECTIONS, fv, module_name=__name__)
    try:
        stray = fv(["toolkit.train", *argv])[1:]
    except flags.Error as e:
        raise BadInput(f"the trainer's flags after '--': {e}") from None
    if stray:
        raise BadInput(f"unexpected arguments: {' '.join(stray)} (the trainer's flags go after '--', as --name=value)")
    if fv["cluster"].present and fv["cluster"].value != "tf_config":
        raise BadInput("--cluster: Ray Train gives each worker its TF_CONFIG; leave --cluster out")
    if not fv["model_dir"].present or not fv["model_dir"].value:
        raise BadInput("--model_dir: give the Ray workers a run directory they all see (after '--'), e.g. a shared "
                       "path or gs://...")
    # Ray's workers run in folders of Ray's: relative paths are made absolute here (the last flag wins)
    absolute = [f"--{name}={os.path.abspath(fv[name].value)}" for name in ("model_dir", "data_dir", "export_dir")
                if fv[name].value and "://" not in fv[name].value]
    metrics = launcher.launch(ray_config, [*argv, *absolute], os.path.abspath(fv["model_dir"].value)
                              if "://" not in fv["model_dir"].value else fv["model_dir"].value)
    log(f"ray: done; {', '.join(f'{k} {v}' for k, v in sorted(metrics.items()) if k != 'rank')}")


def run_main() -> None:
    cli.run(__doc__, (jobs.RayConfig,), main, positional=True)


if __name__ == "__main__":
    run_main()
