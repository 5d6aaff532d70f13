"""The `escalation-risk` entry point: training's and the service's commands in one group."""

from __future__ import annotations

import click

from cli.common import quiet_libraries
from serving.cli import commands as serving_commands
from training.cli import commands as training_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Escalation risk: learn from ticket history which open tickets will escalate."""
    quiet_libraries()


for group in (training_commands, serving_commands):
    for name, command in group.commands.items():
        main.add_command(command, name)
