"""The one prologue of every command line: flags defined from config dataclasses, one parse, one
table of exit codes.

Each command (`python -m toolkit.train`, `toolkit.export`, `toolkit.parity`, `toolkit.evaluate`,
`toolkit.infer`, `toolkit.data.convert`) is a thin module whose `run_main()` calls `run(doc,
sections, main)`: the fields of the config dataclasses in `sections` become its flags (same
names, defaults and help), a flag error (unknown, malformed, a value out of range) ends with one
line and exit code 2, and `main(argv)` turns the parsed flags into frozen config objects once and
calls the library. A `toolkit.common.errors.ToolkitError` the library raises ends the
command with one line on stderr and its exit code; anything else is a bug and shows its traceback
(exit code 1). `--help` prints what the command does, its flags and its exit codes.
Library code never imports this module.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable, Optional, Sequence

from toolkit.common.errors import ExitCode, ToolkitError, describe_exit_codes, disk_full
from toolkit.common.logs import error
from toolkit.common.scratch import exit_now
from toolkit.common.startup import quiet_tensorflow_startup


def define_flags(sections: Sequence[type], fv=None, notes: Optional[dict] = None, module_name: Optional[str] = None,
                 omit: Sequence[str] = ()) -> None:
    """Define one absl flag per field of each dataclass in `sections` on `fv` (the global FLAGS).

    Args:
      sections: config dataclasses whose fields were made with `field`.
      fv: the FlagValues to define them on.
      notes: {flag name: text appended to its help} (e.g. the demo dataset's own default).
      module_name: the module the flags belong to in absl's registry (None: the running program).
      omit: fields that are not flags of this command.
    """
    from absl import flags

    fv = flags.FLAGS if fv is None else fv
    owner = {"module_name": module_name or sys.argv[0]}
    for section in sections:
        for f in (f for f in dataclasses.fields(section) if f.name not in omit):
            help_text = f.metadata["help"] + ((notes or {}).get(f.name) or "")
            if f.name in fv:
                raise ValueError(f"flag --{f.name} is defined twice (by {section.__name__} and another section)")
            bound = {"lower_bound": f.metadata["lower_bound"]} if "lower_bound" in f.metadata else {}
            if f.metadata.get("kind") == "multi":
                flags.DEFINE_multi_string(f.name, list(f.default), help_text, flag_values=fv, **owner)
            elif isinstance(f.default, bool) or f.metadata.get("kind") == "bool":
                flags.DEFINE_bool(f.name, f.default, help_text, flag_values=fv, **owner)
            elif isinstance(f.default, int):
                flags.DEFINE_integer(f.name, f.default, help_text, flag_values=fv, **bound, **owner)
            elif isinstance(f.default, float):
                flags.DEFINE_float(f.name, f.default, help_text, flag_values=fv, **bound, **owner)
            else:
                flags.DEFINE_string(f.name, f.default, help_text, flag_values=fv, **owner)


def values_of(section: type, fv, default_of: Optional[Callable[[str], object]] = None, omit: Sequence[str] = ()) -> dict:
    """{field: value} of one section from parsed flags; `default_of(name)` replaces the default of a
    flag not given on the command line (None: keep it); omitted fields keep their defaults."""
    values = {}
    for f in (f for f in dataclasses.fields(section) if f.name not in omit):
        flag = fv[f.name]
        value = flag.value
        if not flag.present and default_of is not None:
            replaced = default_of(f.name)
            value = value if replaced is None else replaced
        values[f.name] = tuple(value) if f.metadata.get("kind") == "multi" else value
    return values


def parse_args(sections: Sequence[type], argv: Sequence[str], omit: Sequence[str] = ()) -> tuple:
    """(one config object per section, the positional arguments) of a command line, parsed on fresh
    FlagValues: a command's work without its process (tests, notebooks). Raises absl's flags.Error."""
    from absl import flags

    fv = flags.FlagValues()
    define_flags(sections, fv, module_name=__name__, omit=omit)
    rest = fv(["toolkit", *argv])
    return tuple(s(**values_of(s, fv, omit=omit)) for s in sections), rest[1:]


def quiet_tensorflow_logs(verbosity_given: bool) -> None:
    """Keep TensorFlow's INFO lines (every SavedModel tensor, each checkpoint write, each collective
    of a multi-worker run) out of the progress log, unless --verbosity was given to bring them back."""
    from absl import logging as absl_logging

    if not verbosity_given:
        absl_logging.set_verbosity(absl_logging.WARNING)


def _parser(fv):
    """absl's flag parsing, but exit code 2 and one line for a bad flag, and 0 after --help."""
    from absl import flags

    def parse(argv):
        try:
            return fv(argv)
        except flags.Error as e:
            error(f"{e} (see --help)")
            sys.exit(ExitCode.BAD_INPUT)
        except SystemExit as e:  # absl exits 1 after printing --help / --helpfull
            asked = any(a.split("=")[0] in ("--help", "-help", "--helpshort", "--helpfull", "-?") for a in argv[1:])
            sys.exit(ExitCode.OK if asked and e.code == 1 else e.code)

    return parse


def run(doc: str, sections: Sequence[type], main: Callable, positional: bool = False, predefined: bool = False,
        omit: Sequence[str] = (), tf_log_level: str = "2") -> None:
    """Run a command: define its flags, parse them, call `main(argv)`, map typed errors to exit codes.

    Args:
      doc: what the command does (its module docstring): --help prints it with the exit codes.
      sections: the config dataclasses whose fields are the command's flags.
      main: called with the positional arguments left after the flags (a list of str).
      positional: whether positional arguments are accepted (else one is a bad flag: exit code 2).
      predefined: the flags are defined already (the trainer's, by importing toolkit.flags).
      omit: fields of `sections` that are not flags of this command.
      tf_log_level: TF_CPP_MIN_LOG_LEVEL unless set (3 where libjpeg's complaint about each bad file
        would repeat the reason the command reports itself).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_log_level)  # before TensorFlow loads: its C++ start-up chatter
    quiet_tensorflow_startup()  # and the lines that setting does not reach (toolkit.common.startup)
    from absl import app, flags

    fv = flags.FLAGS
    if not predefined:
        define_flags(sections, fv, omit=omit)
    for section in sections:  # --help lists these as the command's own flags
        for f in (f for f in dataclasses.fields(section) if f.name not in omit):
            fv.register_key_flag_for_module(sys.argv[0], fv[f.name])
    sys.modules["__main__"].__doc__ = f"{doc.rstrip()}\n\nExit codes:\n{describe_exit_codes()}\n"

    def app_main(argv):
        if len(argv) > 1 and not positional:
            error(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value; see --help)")
            sys.exit(ExitCode.BAD_INPUT)
        quiet_tensorflow_logs(fv["verbosity"].present)
        try:
            try:
                main(argv[1:])
            except ToolkitError:
                raise
            except Exception as e:  # a full disk is the user's to fix, not a bug: one line, its own code
                full = disk_full(e)
                if full is None:
                    raise
                raise full from e
        except ToolkitError as e:
            from toolkit.common.messages import one_line

            error(one_line(e))
            if e.exit_code == ExitCode.WORKER_LOST:
                exit_now(e.exit_code)  # a normal exit would wait on the dead worker
            sys.exit(e.exit_code)

    app.run(app_main, flags_parser=_parser(fv))
