"""The README's "Faults on purpose" section, run as a new user would: its shell blocks, pasted into one shell.

It follows tests/e2e/test_readme_tour.py's conventions (and uses its parser, node, shell
and shape matcher): `herald serve` runs from a fresh directory on a free port given as
HERALD_PORT, with the breaker setting the section itself offers for a quicker demo
(read from the README, `HERALD_LIMITS=...`), and every command must succeed and print
what its `# -> ` line shows. A command whose comment says "run it again" is run again
until it does, for up to AGAIN_S: the section waits for the retries' backoff and for
the breaker's open timeout.
"""

from __future__ import annotations

import re

import pytest
import trio

from tests.e2e.test_readme_tour import README, check_output, commands, fits, readme_node
from tests.servers import free_port

pytestmark = pytest.mark.slow

HEADING = "\n## Faults on purpose: retries, the breaker and the dead-letter queue\n"
AGAIN_S = 90


def section() -> str:
    return README.read_text().split(HEADING, 1)[1].split("\n## ", 1)[0]


def test_the_section_is_shell_commands_with_outputs_shown():
    text = section()
    found = [c for block in re.findall(r"```sh\n(.*?)```", text, re.S) for c in commands(block)]
    assert len(found) >= 10 and sum(c.expected is not None for c in found) >= 7
    assert not any(c.blocks or c.background for c in found)
    assert re.search(r"`HERALD_LIMITS=(sms\.open_timeout_s=\d+) make run`", text)
    for command in found:
        if " -d " in command.text:
            assert "Content-Type: application/json" in command.text, command.text


async def test_the_faults_section_runs_top_to_bottom(tmp_path):
    text = section()
    found = [c for block in re.findall(r"```sh\n(.*?)```", text, re.S) for c in commands(block)]
    quicker = re.search(r"`HERALD_LIMITS=(\S+) make run`", text)
    assert quicker is not None
    async with readme_node(tmp_path, free_port(), HERALD_LIMITS=quicker.group(1)) as (shell, _):
        for command in found:
            with trio.fail_after(AGAIN_S + 30):
                output, code = await shell.run(command.text)
                if command.again:
                    with trio.move_on_after(AGAIN_S):
                        while not fits(command, output):
                            await trio.sleep(1)
                            output, code = await shell.run(command.text)
            stderr = (tmp_path / "bash-stderr.txt").read_text()
            assert code == 0, (command.text, code, output, stderr)
            if command.expected is not None:
                check_output(command, output)
