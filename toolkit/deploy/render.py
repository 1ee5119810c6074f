"""ENGINE + flags -> the job's text: YAML (through PyYAML, so always valid) for Kubernetes and Vertex AI,
a bash script for SLURM; and the atomic write of it."""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from toolkit import jobs
from toolkit.common.atomic import AtomicFile
from toolkit.common.errors import BadInput
from toolkit.deploy import kubernetes, slurm, spec, vertex

WHAT = {"indexed_job": "a Kubernetes Indexed Job and its headless Service", "jobset": "a Kubernetes JobSet",
        "tfjob": "a Kubeflow TFJob", "slurm": "a SLURM batch script", "vertex": "a Vertex AI CustomJobSpec"}


def objects(engine: str, c: jobs.DeployConfig, train_args: Sequence[str]) -> list:
    """The job as dicts (Kubernetes objects, or Vertex AI's CustomJobSpec), checked first."""
    spec.check(engine, c, train_args)
    if engine == "vertex":
        return [vertex.custom_job_spec(c, train_args)]
    if engine == "slurm":
        raise ValueError("slurm renders a script, not objects: use render()")
    return kubernetes.BUILDERS[engine](c, train_args)


def header(engine: str, c: jobs.DeployConfig, command_line: Optional[str]) -> str:
    """The comment block above the job: what it is, the command that rendered it (one line, to copy), the notes."""
    gpus = f"{c.gpus_per_worker} GPU{'s' * (c.gpus_per_worker > 1)} each" if c.gpus_per_worker else "CPUs only"
    what = (f"{WHAT[engine]}: {c.workers} worker{'s' * (c.workers > 1)} ({gpus}) of toolkit.train, worker 0 the "
            "chief; rendered by toolkit.deploy" + (":" if command_line else "."))
    notes = (slurm.notes(c) if engine == "slurm" else vertex.notes(c) if engine == "vertex"
             else kubernetes.notes(engine, c))
    return spec.comment([what]) + (spec.comment([command_line], width=0) if command_line else "") + spec.comment(notes)


def render(engine: str, c: jobs.DeployConfig, train_args: Sequence[str] = (),
           command_line: Optional[str] = None) -> str:
    """The text of the job: its comments (how to start it, the restart policy), then the job itself."""
    import yaml

    if engine == "slurm":
        spec.check(engine, c, train_args)
        return slurm.script(c, train_args, header(engine, c, command_line))
    documents = objects(engine, c, train_args)
    text = yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False, width=4096,
                              explicit_start=len(documents) > 1)
    return header(engine, c, command_line) + text


def write(text: str, output: str) -> None:
    """`text` to stdout, or to the file `output` (a temporary name beside it, then renamed)."""
    if not output:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise BadInput(f"--output: the directory {directory} does not exist")
    if os.path.isdir(output):
        raise BadInput(f"--output: {output} is a directory")
    with AtomicFile(output) as f:
        f.write(text)
