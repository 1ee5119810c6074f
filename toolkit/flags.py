"""The trainer's absl flags, defined from the config dataclasses; `to_config()` builds the Config once.

Every field of toolkit.config's sections is a flag of the same name, with the field's default and
help: a default cannot differ between the command line and the library. With no --data_dir the
built-in demo dataset is used, and the flags the user left alone take config.DEMO_OVERRIDES.
Only entry points import this module.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from toolkit import config as cfg

FLAGS = flags.FLAGS

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


def _define_section(section) -> None:
    for field in dataclasses.fields(section):
        help_text = field.metadata["help"]
        if field.name in cfg.DEMO_OVERRIDES:
            help_text += f" (demo dataset: {cfg.DEMO_OVERRIDES[field.name]})"
        _DEFINE[type(field.default)](field.name, field.default, help_text)


for _section in cfg.SECTIONS.values():
    _define_section(_section)


def _value(name: str):
    if not FLAGS.data_dir and name in cfg.DEMO_OVERRIDES and not FLAGS[name].present:
        return cfg.DEMO_OVERRIDES[name]
    return FLAGS[name].value


def to_config() -> cfg.Config:
    """The frozen Config from the parsed flags, validated (a ConfigError names the flag)."""
    sections = {
        name: section(**{f.name: _value(f.name) for f in dataclasses.fields(section)})
        for name, section in cfg.SECTIONS.items()
    }
    config = cfg.Config(**sections)
    cfg.validate(config)
    return config
