"""What every command shares before its work starts: flags, --help, and usage errors.

absl's app.run prints 160 flags in alphabetical order for --help and exits 1 for it and for
a mistyped flag. Here --help is a page written for a first-time user (a summary, an example,
the flags to know first in groups, the subcommands) and exits 0; --helpfull lists every flag;
a usage error is one line with a hint, exit status 2, as for other Unix tools.

This module imports neither TensorFlow nor numpy: a command parses its flags and reports a
mistake in well under a second, before the slow imports.
"""

import dataclasses
import difflib
import os
import re
import sys
import textwrap
from typing import Sequence, Tuple

from absl import flags
from absl import logging

from retrain.cli import console

# What a shell reports for a command used wrongly (bash, getopt, argparse).
USAGE_ERROR_STATUS = 2
_HELP_ARGS = ("-h", "-help", "--help", "-?", "--helpshort", "-helpshort")
_FULL_HELP_ARGS = ("--helpfull", "-helpfull")
_WIDTH = 88


@dataclasses.dataclass
class HelpPage:
    """The --help page of one command."""

    program: str  # "retrain", "label_image", "retrain compare"
    usage: str  # the synopsis after the program name
    summary: str  # one paragraph: what the command does
    examples: Sequence[str]  # command lines, shown as they are
    # (title, [flag names]): the flags a user needs first, in groups.
    groups: Sequence[Tuple[str, Sequence[str]]]
    subcommands: Sequence[Tuple[str, str]] = ()  # (name, what it does)
    more: str = "README.md and docs/ explain every stage."


def run(help_page, flag_values, main, argv=None, known_only=False):
    """Parses argv into flag_values, then exits with main(remaining argv)'s status.

    --help prints help_page and --helpfull every flag (status 0); a usage error prints one
    line (status 2). main gets [program, *arguments that are not flags] like absl's app.run.
    known_only: leave unknown flags in the remaining arguments (for Beam's options).
    """
    argv = list(sys.argv if argv is None else argv)
    console.skip_garbage_collection_at_exit()
    remaining = parse_or_exit(help_page, flag_values, argv, known_only)
    logging.use_absl_handler()
    sys.exit(main(remaining))


def parse_or_exit(help_page, flag_values, argv, known_only=False):
    """The arguments left after parsing argv's flags; exits for --help and usage errors."""
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if any(arg in _FULL_HELP_ARGS for arg in options):
        print_page(full_help(help_page, flag_values))
    if any(arg in _HELP_ARGS for arg in options):
        print_page(short_help(help_page, flag_values))
    try:
        return flag_values(argv, known_only=known_only)
    except flags.Error as error:
        usage_error(help_page.program, describe_flag_error(error, flag_values))
    return None  # Not reached: usage_error exits.


def print_page(text):
    """Prints a help page and exits 0, also when a pager or `head` closed the pipe early."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the closed pipe again when it flushes stdout at exit.
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    sys.exit(0)


def usage_error(program, message):
    """Prints "<program>: error: <message>. Run '<program> --help' for usage."; exits 2."""
    sentence = message if message.endswith("?") else message.rstrip(".") + "."
    console.print_error(program, f"{sentence} Run '{program} --help' for usage.")
    sys.exit(USAGE_ERROR_STATUS)


def describe_flag_error(error, flag_values):
    """absl's flag error as a sentence that names the flag and, if mistyped, the likely one."""
    name = getattr(error, "flagname", None)
    if isinstance(error, flags.UnrecognizedFlagError) and name:
        known = [flag for flag in flag_values if len(flag) > 1]
        plain = name[2:] if name.startswith("no") and name[2:] in known else name
        if plain != name:
            return f"--no{plain} is for a boolean flag; --{plain} is not one"
        guesses = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join('--' + guess for guess in guesses)}?" if guesses else ""
        return f"unknown flag --{name}{hint}"
    return str(error)


def short_help(help_page, flag_values):
    """The --help page: usage, summary, examples, flag groups, subcommands, where the rest is."""
    lines = [f"usage: {help_page.program} {help_page.usage}"]
    lines += [f"       {help_page.program} {name} ..." for name, _ in help_page.subcommands]
    lines += ["", *textwrap.wrap(help_page.summary, _WIDTH), "", "Examples:"]
    lines += [f"  {example}" for example in help_page.examples]
    for title, names in help_page.groups:
        lines += ["", f"{title}:"]
        lines += [line for name in names for line in _flag_lines(flag_values[name])]
    if help_page.subcommands:
        lines += ["", "Subcommands (each has its own --help):"]
        width = max(len(name) for name, _ in help_page.subcommands)
        lines += [f"  {help_page.program} {name.ljust(width)}  {what}"
                  for name, what in help_page.subcommands]
    shown = sum(len(names) for _, names in help_page.groups)
    total = len(own_flags(flag_values))
    lines += ["", f"{shown} of {total} flags shown; '{help_page.program} --helpfull' lists them "
              f"all. {help_page.more}"]
    return "\n".join(lines)


def full_help(help_page, flag_values):
    """--helpfull: the usage line and every flag of the command, alphabetically."""
    lines = [f"usage: {help_page.program} {help_page.usage}", "", "All flags:"]
    for flag in sorted(own_flags(flag_values), key=lambda flag: flag.name):
        lines += _flag_lines(flag)
    lines += ["", "Any flag can also be read from a file: --flagfile=FILE (one --flag=value a line)."]
    return "\n".join(lines)


def own_flags(flag_values):
    """The command's own flags: all but absl's (--flagfile, --logtostderr, ...)."""
    own = []
    for module_name, module_flags in flag_values.flags_by_module_dict().items():
        if not module_name.startswith("absl"):
            own += [flag for flag in module_flags if flag not in own]
    return own


def _flag_lines(flag):
    """"  --name=VALUE  help (default: ...)", wrapped and indented."""
    if flag.flag_type() == "bool":
        head = f"  --[no]{flag.name}"
    else:
        head = f"  --{flag.name}={_placeholder(flag)}"
    # absl appends this to the help of a flag that can be repeated; the help says so itself.
    text = re.sub(r";\s*repeat this option to specify a list of values$", "", flag.help)
    if flag.default not in (None, "", [], False):
        text += f" (default: {flag.default_as_str.strip(chr(39))})"
    wrapped = textwrap.wrap(text, _WIDTH - 8)
    return [head] + [f"        {line}" for line in wrapped]


def _placeholder(flag):
    """What the value looks like: the choices of an enum, else a word for its kind."""
    choices = getattr(flag.parser, "enum_values", None)
    if choices:
        return "|".join(choices)
    if flag.name.endswith("_dir") or flag.name.endswith("_path"):
        return "FOLDER"
    if flag.name.endswith("_file") or flag.name.endswith("_model") or flag.name == "labels":
        return "FILE"
    return {"int": "N", "float": "X", "list": "A,B,..."}.get(flag.flag_type(), "VALUE")
