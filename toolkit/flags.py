"""The trainer's absl flags, defined (on import) from the config dataclasses; `to_config()` builds the Config once.

Every field of toolkit.config's sections is a flag of the same name, with the field's default and
help (toolkit.cli.define_flags): a default cannot differ between the command line and the
library. A recipe shipped with the package (toolkit/recipes, chosen by --recipe, auto by default)
supplies every flag the user did not give; flags on the command line or in the user's own
--flagfile always win. Only the trainer's entry point (and tests of its flags) import this module;
the other commands define their own flags when they run (toolkit.cli.run).
"""

from __future__ import annotations

import dataclasses

from absl import flags

from toolkit import cli
from toolkit import config as cfg
from toolkit import recipes

FLAGS = flags.FLAGS
SECTIONS = tuple(cfg.SECTIONS.values())

cli.define_flags(SECTIONS, FLAGS, module_name=__name__)


def recipe_values(name: str) -> dict:
    """{flag: value} that a shipped recipe's flag file sets, parsed as the command line would be."""
    fv = flags.FlagValues()
    cli.define_flags(SECTIONS, fv, module_name=__name__)
    fv(["toolkit.train", f"--flagfile={recipes.path(name)}"])
    return {name: fv[name].value for name in fv if fv[name].present and name != "flagfile"}


def to_config() -> cfg.Config:
    """The frozen Config from the parsed flags and the recipe, validated (a ConfigError names the flag)."""
    name, why = recipes.choose(FLAGS.recipe, FLAGS.data_dir, FLAGS.init_weights)
    supplied = recipe_values(name)
    sections = {s: section(**cli.values_of(section, FLAGS, supplied.get)) for s, section in cfg.SECTIONS.items()}
    sections["train"] = dataclasses.replace(sections["train"], recipe=name)
    config = cfg.Config(**sections, recipe_reason=why)
    cfg.validate(config)
    return config
