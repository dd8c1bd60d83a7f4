"""Every command's --help: a line for each option, and an example to copy."""

from __future__ import annotations

import argparse

from capgate_cli import build_parser


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaves(child, (*path, name))


def test_every_command_describes_each_option_and_shows_an_example():
    missing = []
    for path, parser in _leaves(build_parser()):
        name = " ".join(path)
        if "example:" not in (parser.epilog or ""):
            missing.append(f"{name}: no example")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "\n".join(missing)


def test_a_mistyped_command_gets_the_closest_one(capsys):
    from capgate_cli import main

    assert main(["agnt", "list"]) == 2
    assert "did you mean 'agent'?" in capsys.readouterr().err
