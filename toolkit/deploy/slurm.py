"""A SLURM batch script: one srun task per node (the trainer takes all of a node's GPUs through
MirroredStrategy), workers found by TensorFlow's SlurmClusterResolver (--cluster slurm), and a
bounded loop that runs the step again when it ends with a code worth a restart.

srun returns the highest exit code of its tasks (128 + N for a task killed by signal N), and
--kill-on-bad-exit ends the step's other tasks as soon as one fails. So the loop fails at once on a
permanent code (the workers decide those together: bad flags, a NaN loss are the same on every
worker) and restarts on any other non-zero code, up to --max_restarts times in all, counting the
times SLURM itself requeued the job (SLURM_RESTART_COUNT: a node failure, a preemption, with
--requeue). Each run resumes from the last checkpoint in --model_dir.
"""

from __future__ import annotations

import shlex
from typing import Sequence

from toolkit import jobs
from toolkit.deploy import spec


def sbatch_lines(c: jobs.DeployConfig) -> list:
    lines = [f"--job-name={c.name}", f"--nodes={c.workers}", "--ntasks-per-node=1"]
    if c.gpus_per_worker:
        lines.append(f"--gpus-per-node={c.gpus_per_worker}")
    lines.append(f"--cpus-per-task={c.cpus_per_worker}" if c.cpus_per_worker else "--exclusive")
    lines += ["--requeue", "--open-mode=append", f"--output={c.name}-%j.log"]
    return [f"#SBATCH {line}" for line in lines]


def srun_line(c: jobs.DeployConfig) -> str:
    options = ["--kill-on-bad-exit=1", f"--nodes={c.workers}", "--ntasks-per-node=1", '--cpus-per-task="$cpus"']
    if c.gpus_per_worker:
        options.append(f"--gpus-per-node={c.gpus_per_worker}")
    return f"srun {' '.join(options)} {shlex.join(spec.TRAINER)} \"${{train_args[@]}}\""


# The restart loop; @PERMANENT@ and @SRUN@ are filled in.
LOOP = """\
while true; do
  @SRUN@
  code=$?
  case "$code" in
    0) exit 0 ;;
    @PERMANENT@) echo "toolkit.deploy: the trainer exited with code $code: not restarted" >&2; exit "$code" ;;
  esac
  if [ "$restarts" -ge "$max_restarts" ]; then
    echo "toolkit.deploy: exit code $code after $restarts restarts (--max_restarts): giving up" >&2
    exit "$code"
  fi
  restarts=$((restarts + 1))
  echo "toolkit.deploy: exit code $code: restart $restarts of $max_restarts, from the last checkpoint" >&2
done
"""


def script(c: jobs.DeployConfig, train_args: Sequence[str], header: str) -> str:
    """The sbatch script: header comments, #SBATCH lines, the trainer's flags (shell-quoted), the loop."""
    flags = "".join(f"  {shlex.quote(arg)}\n" for arg in spec.train_command("slurm", c, train_args))
    cpus = (str(c.cpus_per_worker) if c.cpus_per_worker
            else "${SLURM_CPUS_ON_NODE:?submit this script with sbatch}  # the whole node (--exclusive)")
    loop = LOOP.replace("@SRUN@", srun_line(c)).replace("@PERMANENT@", "|".join(str(code) for code in spec.PERMANENT))
    return ("#!/bin/bash\n" + header + "\n".join(sbatch_lines(c)) + "\n\n"
            "# The trainer's flags (the environment with the toolkit installed must be active: sbatch passes\n"
            "# your shell's environment on).\n"
            f"train_args=(\n{flags})\n"
            f"max_restarts={c.max_restarts}\n"
            "restarts=${SLURM_RESTART_COUNT:-0}  # SLURM's own requeues count too\n"
            f"cpus={cpus}\n\n" + loop)


def notes(c: jobs.DeployConfig) -> list:
    permanent = ", ".join(str(code) for code in spec.PERMANENT)
    return ["Submit: sbatch FILE; stop: scancel JOBID (the whole job, this script included).",
            spec.storage_note("slurm"),
            f"Workers: {c.workers} nodes, one task each; TensorFlow's SlurmClusterResolver reads SLURM_PROCID, "
            f"SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE; port {spec.port('slurm', c)}.",
            f"Restarts: exit codes {permanent} (bad input, diverged, parity, nothing scored, disk full) end the job; "
            f"any other failure (a lost worker 5, a preemption 8, a crash) runs the step again, up to {c.max_restarts} "
            "times including SLURM's own requeues, and the trainer resumes from the last checkpoint."]
