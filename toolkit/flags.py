"""The trainer's absl flags, defined (on import) from the config dataclasses; `to_config()` builds the Config once.

Every field of toolkit.config's sections is a flag of the same name, with the field's default and
help (toolkit.cli.define_flags): a default cannot differ between the command line and the
library. With no --data_dir the built-in demo dataset is used, and the flags the user left alone
take config.DEMO_OVERRIDES. Only the trainer's entry point (and tests of its flags) import this
module; the other commands define their own flags when they run (toolkit.cli.run).
"""

from __future__ import annotations

from absl import flags

from toolkit import cli
from toolkit import config as cfg

FLAGS = flags.FLAGS

cli.define_flags(tuple(cfg.SECTIONS.values()), FLAGS,
                 notes={name: f" (demo dataset: {value})" for name, value in cfg.DEMO_OVERRIDES.items()}, module_name=__name__)


def _demo_default(name: str):
    """The demo dataset's own default of a flag left alone, when there is no --data_dir."""
    return None if FLAGS.data_dir else cfg.DEMO_OVERRIDES.get(name)


def to_config() -> cfg.Config:
    """The frozen Config from the parsed flags, validated (a ConfigError names the flag)."""
    sections = {name: section(**cli.values_of(section, FLAGS, _demo_default)) for name, section in cfg.SECTIONS.items()}
    config = cfg.Config(**sections)
    cfg.validate(config)
    return config
