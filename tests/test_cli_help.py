"""Every command's --help is plain text for people: no reStructuredText markup, no internals."""

from __future__ import annotations

import argparse
import re

import pytest

from clipguide.cli import build_parser

# reST that a terminal shows as is: ``literals``, `interpreted text`, :role:`targets`, and
# names of the command line's own modules (internals a user cannot act on)
MARKUP = re.compile(r"``|`[^`\n]+`|:[a-z]+:`|\bclipguide\.cli\b")


def _parsers(parser: argparse.ArgumentParser, name: str = "clipguide"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


COMMANDS = dict(_parsers(build_parser()))


def test_every_subcommand_is_checked():
    assert {"clipguide", "clipguide generate", "clipguide score", "clipguide rerank"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_is_plain_text(command):
    text = COMMANDS[command].format_help()
    found = [
        text[max(m.start() - 30, 0) : m.end() + 30].replace("\n", " ")
        for m in MARKUP.finditer(text)
    ]
    assert not found, f"{command} --help shows markup or internals: {found}"
