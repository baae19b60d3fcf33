"""Command-line argument helpers shared by several commands, and the parser class of them all.

Only argparse-level code lives here: building the parser must not import torch, e3nn or
torch_geometric (``sevenomni --help`` stays fast; tests/integration/test_cli_startup.py checks it).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys

# The ways `sevenomni dbs select` chooses structures; sevenomni.bridging.select checks a request against them.
SELECTION_STRATEGIES = ("random", "fps", "disagreement")


def add_trust_pickle_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--trust-pickle`` flag of every command that loads a model
    (see :func:`sevenomni.model_io.loading.load_model`)."""
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="unpickle a SevenNet checkpoint beyond plain data (can run arbitrary code: only files you trust)",
    )


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parsers of ``parser``'s subcommands by name (empty for a leaf command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every parser of its subcommands, at any depth."""
    found = [parser]
    for child in subcommand_parsers(parser).values():
        found += all_parsers(child)
    return found


def long_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The ``--long`` option strings of one parser."""
    return [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]


def closest(word: str, candidates: list[str]) -> str:
    """`` (did you mean X?)`` with the closest candidates by difflib, or "" when none is close."""
    matches = difflib.get_close_matches(word, candidates, n=3, cutoff=0.7)
    return f" (did you mean {' or '.join(matches)}?)" if matches else ""


class CommandParser(argparse.ArgumentParser):
    """The parser of ``sevenomni`` and its subcommands (argparse gives subparsers the parent's class).

    ``parse_args`` reads flags spelled with underscores (MACE's ``--energy_key``) as their hyphenated
    form; an unknown flag or subcommand is answered with the closest known ones and the usage of the
    subcommand it was given to.
    """

    argv: list[str] = []

    def parse_args(self, args=None, namespace=None):
        self.argv = self.normalise_flags(sys.argv[1:] if args is None else list(args))
        return super().parse_args(self.argv, namespace)

    def normalise_flags(self, argv: list[str]) -> list[str]:
        """``--a_b[=v]`` → ``--a-b[=v]`` where only the hyphenated flag exists; nothing after ``--``."""
        known = {flag for parser in all_parsers(self) for flag in long_flags(parser)}
        normalised = []
        for position, token in enumerate(argv):
            if token == "--":
                return normalised + argv[position:]
            flag, equals, value = token.partition("=")
            hyphenated = flag.replace("_", "-")
            if flag.startswith("--") and flag not in known and hyphenated in known:
                token = hyphenated + equals + value
            normalised.append(token)
        return normalised

    def command_parser(self) -> argparse.ArgumentParser:
        """The parser of the deepest subcommand named in the arguments being parsed."""
        parser = self
        for token in self.argv:
            parser = subcommand_parsers(parser).get(token, parser)
        return parser

    def error(self, message: str):
        parser = self
        invalid = re.match(r"argument (.+): invalid choice: '(.*)' \(choose from (.*)\)$", message)
        if invalid:
            word, choices = invalid.group(2), re.findall(r"'([^']*)'", invalid.group(3))
            message += closest(word, choices)
        elif message.startswith("unrecognized arguments: "):
            parser = self.command_parser()
            flags = long_flags(parser)
            unknown = message.removeprefix("unrecognized arguments: ").split()
            message = "unrecognized arguments: " + ", ".join(
                token + (closest(token.partition("=")[0], flags) if token.startswith("-") else "") for token in unknown
            )
        parser.print_usage(sys.stderr)
        parser.exit(2, f"{parser.prog}: error: {message}\n")
