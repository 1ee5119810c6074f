"""One command-line convention: every command's --help says what it does and lists the exit codes;
a bad flag is one line and exit code 2 everywhere; typed errors map to their codes by type, never
by message text; the console scripts are installed. Real processes, as a user starts them."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from toolkit.common.errors import ExitCode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
# module, console script, its first line of help, a flag of its own that takes an integer
COMMANDS = [
    ("toolkit.train", "toolkit-train", "python -m toolkit.train: train a ResNetV2 image classifier", "epochs"),
    ("toolkit.export", "toolkit-export", "python -m toolkit.export: export a trained run", "opset"),
    ("toolkit.parity", "toolkit-parity", "python -m toolkit.parity: run the parity gate again", "parity_images"),
    ("toolkit.evaluate", "toolkit-evaluate", "python -m toolkit.evaluate: how good is an exported model", "batch_size"),
    ("toolkit.infer", "toolkit-infer", "python -m toolkit.infer: score many images", "top_k"),
    ("toolkit.data.convert", "toolkit-convert", "python -m toolkit.data.convert: image folders", "shard_size"),
    ("toolkit.deploy", "toolkit-deploy", "python -m toolkit.deploy ENGINE: a multi-worker training job", "workers"),
    ("toolkit.ray", "toolkit-ray", "python -m toolkit.ray: train on N Ray workers", "workers"),
]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120, **kw)


@pytest.mark.parametrize("module, script, first_line, int_flag", COMMANDS)
def test_help_says_what_the_command_does_and_lists_every_exit_code(module, script, first_line, int_flag):
    proc = run([sys.executable, "-m", module, "--help"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(first_line)
    assert "Exit codes:" in proc.stdout and f"--{int_flag}" in proc.stdout  # its own flags, listed
    for code in ExitCode:
        assert f"\n  {int(code)}  " in proc.stdout


@pytest.mark.parametrize("module, script, first_line, int_flag", COMMANDS)
def test_unknown_malformed_flags_and_stray_arguments_exit_2_in_one_line(module, script, first_line, int_flag):
    cases = [["--no_such_flag=1"], [f"--{int_flag}=many"]] + ([] if module == "toolkit.infer" else [["stray"]])
    for args in cases:
        proc = run([sys.executable, "-m", module, *args])
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module, script, first_line, int_flag", COMMANDS)
def test_every_command_is_an_installed_console_script(module, script, first_line, int_flag):
    path = shutil.which(script)
    assert path, f"{script} is not on PATH: install the project (pip install -e .)"
    proc = run([path, "--help"])
    assert proc.returncode == 0 and first_line.split(": ", 1)[1] in proc.stdout, proc.stderr[-2000:]


PROGRAM = textwrap.dedent("""
    import sys
    from toolkit import cli
    from toolkit.common import errors

    def main(argv):
        kind, message = sys.argv_kind
        raise getattr(errors, kind, ValueError)(message) if kind != "ValueError" else ValueError(message)

    sys.argv_kind = (sys.argv.pop(1), sys.argv.pop(1))
    cli.run("a test program", (), main)
""")


@pytest.mark.parametrize("kind, message, code", [
    ("BadInput", "the input is wrong (no flag named)", ExitCode.BAD_INPUT),
    ("Diverged", "loss became nan at step 3", ExitCode.DIVERGED),
    ("ParityFailed", "--opset: looks like a flag but is a parity failure", ExitCode.PARITY_FAILED),
    ("WorkerLost", "a worker of the multi-worker job was lost", ExitCode.WORKER_LOST),
    ("NothingScored", "none of the 3 inputs could be scored", ExitCode.NOTHING_SCORED),
])
def test_typed_errors_map_to_their_exit_code_by_type_in_one_line(kind, message, code):
    proc = run([sys.executable, "-c", PROGRAM, kind, message])
    assert proc.returncode == code, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]


def test_an_untyped_error_is_a_bug_with_its_traceback_even_when_it_names_a_flag():
    proc = run([sys.executable, "-c", PROGRAM, "ValueError", "--batch_size: a bug that happens to look like a bad flag"])
    assert proc.returncode == ExitCode.CRASHED and "Traceback" in proc.stderr


def test_the_library_config_objects_come_from_the_same_flags_without_a_process():
    from toolkit import cli, config

    (infer,), rest = cli.parse_args((config.InferConfig,), ["--model=m", "--inputs=a", "--output=o.csv", "b", "c"])
    assert infer.inputs == ("a",) and rest == ["b", "c"] and infer.batch_size == config.InferConfig().batch_size
    with pytest.raises(Exception, match="top_k"):
        cli.parse_args((config.InferConfig,), ["--top_k=0"])  # lower_bound from the field's metadata


QUIET = textwrap.dedent("""
    import os
    from toolkit import cli
    from toolkit.common.startup import IMPORT_NOISE, filtered_stderr

    def main(argv):
        import tensorflow as tf  # through the quiet import that cli.run installs
        print(len(tf.config.list_physical_devices("CPU")), flush=True)
        with filtered_stderr(IMPORT_NOISE):
            os.write(2, b"I0000 00:00:1.2 99 port.cc:153] oneDNN custom operations are on. You may see\\n")
            os.write(2, b"a line that is not start-up noise\\n")

    cli.run("a test program", (), main)
""")


def test_tensorflow_start_up_lines_are_dropped_and_other_stderr_lines_kept():
    env = {k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    proc = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "1", proc.stderr[-2000:]
    assert proc.stderr.splitlines() == ["a line that is not start-up noise"], proc.stderr[-2000:]
