"""What every engine's job shares: the checks of the flags, the trainer's command line, the exit codes.

The trainer's exit codes (toolkit.common.errors.ExitCode) split in two for a cluster engine:
PERMANENT ones (bad input 2, diverged 3, parity failed 4, nothing scored 6, disk full 7) fail again
on every retry, so the job should fail at once; the others (a lost worker 5, a preemption 8, a crash
or a cluster that did not form 1, a process killed by a signal) are worth a restart, which resumes
from the last checkpoint in --model_dir. Each engine renders this as well as it can tell the codes
apart.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from typing import Optional, Sequence

from toolkit import config, jobs
from toolkit.common.errors import BadInput, ExitCode

PERMANENT = tuple(int(c) for c in (ExitCode.BAD_INPUT, ExitCode.DIVERGED, ExitCode.PARITY_FAILED,
                                   ExitCode.NOTHING_SCORED, ExitCode.DISK_FULL))
KUBERNETES = ("jobset", "indexed_job", "tfjob")
PORTS = {"jobset": 2222, "indexed_job": 2222, "tfjob": 2222, "slurm": 8888}  # the trainer's own defaults
TRAINER = ("python3", "-m", "toolkit.train")
GRACE_SECONDS = 30  # SIGTERM -> the step in progress + one checkpoint (3-4 s measured, BUILD.md) -> exit 8
MAX_HOST_NAME = 63  # a DNS label
DEFAULT_MACHINE, DEFAULT_ACCELERATOR = "n1-standard-8", "NVIDIA_TESLA_T4"

# Flags of toolkit.deploy that the trainer also has: given before `--`, refused after it.
SET_BY_DEPLOY = ("model_dir", "data_dir", "cluster", "cluster_workers", "cluster_hosts", "cluster_port")
ABSL_FLAGS = ("verbosity", "v", "flagfile", "logtostderr", "alsologtostderr", "log_dir", "stderrthreshold",
              "showprefixforinfo")
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")
_FLAG = re.compile(r"--?(\w+)(?:=(.*))?", re.S)


@dataclasses.dataclass(frozen=True)
class Volume:
    """A PersistentVolumeClaim mounted at `path` in every Kubernetes worker (--volume CLAIM:PATH[:ro])."""

    claim: str
    path: str
    read_only: bool


def parse_volume(text: str) -> Volume:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "ro"):
        raise BadInput(f"--volume: {text!r} is not CLAIM:PATH or CLAIM:PATH:ro")
    claim, path = parts[0], parts[1].rstrip("/") or "/"
    if not _DNS_SUBDOMAIN.fullmatch(claim) or len(claim) > 253:
        raise BadInput(f"--volume: {claim!r} is not a PersistentVolumeClaim name (lowercase letters, digits, '-', '.')")
    if not path.startswith("/"):
        raise BadInput(f"--volume: the mount path {parts[1]!r} of {claim} must be absolute")
    return Volume(claim, path, len(parts) == 3)


def is_url(path: str) -> bool:
    """gs://bucket/run and the like: storage every worker reaches by itself."""
    return bool(_URL.match(path))


def port(engine: str, c: jobs.DeployConfig) -> int:
    return c.port or PORTS[engine]


def longest_host(engine: str, c: jobs.DeployConfig) -> str:
    """The longest name the engine makes from --name (its last worker's), which must be a DNS label."""
    last = c.workers - 1
    return {"indexed_job": f"{c.name}-{last}",  # the Job controller's pod host name
            "jobset": f"{c.name}-workers-0-{last}-abcde",  # JobSet's webhook checks the pod name with a 5-letter suffix
            "tfjob": f"{c.name}-worker-{last}"}.get(engine, c.name)  # the operator's per-pod Service


def check(engine: str, c: jobs.DeployConfig, train_args: Sequence[str]) -> None:
    """Refuse, in one line naming the flag, what would render a job that cannot run."""
    if engine not in jobs.DEPLOY_ENGINES:
        raise BadInput(f"ENGINE: {engine!r} is not one of {', '.join(jobs.DEPLOY_ENGINES)}")
    host = longest_host(engine, c)
    if not _DNS_LABEL.fullmatch(c.name) or len(host) > MAX_HOST_NAME:
        raise BadInput(f"--name: {c.name!r} must be lowercase letters, digits and '-', starting with a letter, short "
                       f"enough that {engine}'s host name {host!r} has at most {MAX_HOST_NAME} characters")
    for flag in ("model_dir", "data_dir") + (() if engine == "slurm" else ("image",)):
        if not getattr(c, flag).strip():
            raise BadInput(f"--{flag}: must be set for {engine}")
    if c.port > 65535:
        raise BadInput(f"--port: {c.port} is not a port (1-65535)")
    _check_engine_flags(engine, c)
    check_train_args(train_args)


def _refuse(flag: str, engines: str, why: str) -> BadInput:
    return BadInput(f"--{flag}: only for {engines}; {why}")


def _check_engine_flags(engine: str, c: jobs.DeployConfig) -> None:
    if engine == "slurm" and c.image:
        raise _refuse("image", "the container engines", "the sbatch script runs the toolkit installed on the nodes")
    if engine != "vertex" and (c.machine_type or c.accelerator_type):
        raise _refuse("machine_type" if c.machine_type else "accelerator_type", "vertex",
                      f"{engine} takes the machine it is given")
    if engine == "vertex" and c.port:
        raise _refuse("port", "kubernetes and slurm", "Vertex AI gives the workers their ports (in TF_CONFIG)")
    if engine == "vertex" and c.cpus_per_worker:
        raise _refuse("cpus_per_worker", "kubernetes and slurm", "on Vertex AI --machine_type sets the CPUs")
    if engine not in KUBERNETES and c.volume:
        where = "gs:// or a shared filesystem" if engine == "slurm" else "gs://"
        raise _refuse("volume", "kubernetes", f"put --model_dir on {where}")
    if engine == "slurm" and c.service_account:
        raise _refuse("service_account", "kubernetes and vertex", "SLURM runs the job as you")
    volumes = [parse_volume(v) for v in c.volume]
    paths = [v.path for v in volumes]
    if len(set(paths)) < len(paths):
        raise BadInput(f"--volume: two claims mounted at {next(p for p in paths if paths.count(p) > 1)}")
    if engine in KUBERNETES and not is_url(c.model_dir) and not _on_volume(c.model_dir, volumes):
        raise BadInput(f"--model_dir: {c.model_dir} is neither on storage like gs:// nor under a writable --volume "
                       "mount: every worker must see the chief's checkpoints (mount a ReadWriteMany claim there)")
    if engine == "vertex" and not (c.model_dir.startswith("gs://") or c.model_dir.startswith("/gcs/")):
        raise BadInput(f"--model_dir: {c.model_dir} is not on Cloud Storage (gs://BUCKET/... or /gcs/BUCKET/...): "
                       "Vertex AI's workers share no disk")


def _on_volume(path: str, volumes: Sequence[Volume]) -> Optional[Volume]:
    """The writable volume `path` is on (the deepest mount holding it decides), or None."""
    inside = [v for v in volumes if path == v.path or path.startswith(v.path.rstrip("/") + "/")]
    deepest = max(inside, key=lambda v: len(v.path), default=None)
    return deepest if deepest is not None and not deepest.read_only else None


def trainer_flags() -> set:
    """Every flag name toolkit.train defines (the fields of its config sections, no TensorFlow needed)."""
    return {f.name for section in config.SECTIONS.values() for f in dataclasses.fields(section)}


def check_train_args(train_args: Sequence[str]) -> None:
    """The trainer's flags after `--`: each a flag toolkit.train knows, none that toolkit.deploy sets, no --fresh."""
    known, booleans = trainer_flags(), {f.name for s in config.SECTIONS.values() for f in dataclasses.fields(s)
                                        if isinstance(f.default, bool)}
    for arg in train_args:
        match = _FLAG.fullmatch(arg)
        if not match:
            continue  # a value (or a negative number)
        name, value = match.group(1), match.group(2)
        plain = name[2:] if name.startswith("no") and name[2:] in booleans else name
        if plain in SET_BY_DEPLOY:
            raise BadInput(f"-- --{plain}: set by toolkit.deploy from its own flags; give --{plain} before `--`"
                           if plain in ("model_dir", "data_dir") else
                           f"-- --{plain}: set by toolkit.deploy for the engine; remove it")
        if plain == "fresh" and name == "fresh" and (value is None or value.lower() not in ("false", "0")):
            raise BadInput("-- --fresh: every restart would start the run anew instead of resuming it; clear "
                           "--model_dir before submitting instead")
        if plain not in known and plain not in ABSL_FLAGS:
            raise BadInput(f"-- --{name}: not a flag of toolkit.train (see python -m toolkit.train --help)")


def train_command(engine: str, c: jobs.DeployConfig, train_args: Sequence[str]) -> list:
    """The trainer's arguments (after `python3 -m toolkit.train`) on every worker of `engine`."""
    if engine in ("jobset", "indexed_job"):
        cluster = ["--cluster=kubernetes"]  # the worker count and the host pattern come from the environment
    elif engine == "slurm":
        cluster = ["--cluster=slurm", f"--cluster_workers={c.workers}", f"--cluster_port={port(engine, c)}"]
    else:  # tfjob, vertex: the engine writes TF_CONFIG; the trainer checks it describes this many workers
        cluster = ["--cluster=tf_config", f"--cluster_workers={c.workers}"]
    return [*cluster, f"--model_dir={c.model_dir}", f"--data_dir={c.data_dir}", *train_args]


def comment(lines: Sequence[str], width: int = 100) -> str:
    """`lines` as a block of '# ' comment lines, each wrapped at `width` (0: not wrapped); a line break
    inside one starts a new comment line."""
    out = []
    for line in lines:
        for part in str(line).split("\n"):
            out += (textwrap.wrap(part, width - 2, subsequent_indent="  ", break_long_words=False,
                                  break_on_hyphens=False) if width else [part]) or [""]
    return "".join(f"# {text}".rstrip() + "\n" for text in out)


def storage_note(engine: str) -> str:
    where = {"slurm": "a filesystem every node mounts at the same path, or gs://",
             "vertex": "gs://..., or its /gcs/ mount"}.get(engine, "gs://..., or a ReadWriteMany claim on --volume")
    return (f"--model_dir and --data_dir must be storage every worker sees at the same path ({where}): the chief "
            "writes the checkpoints there and every worker restores them after a restart.")
