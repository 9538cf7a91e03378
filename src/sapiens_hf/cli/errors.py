"""How the `sapiens-hf` commands fail: a `CommandError` ends a command with one line per problem on stderr and an
exit code (`EXIT_USAGE` for bad arguments, before any work; `EXIT_FAILED` when inputs fail or the model or checkpoint
cannot be loaded), without a traceback unless `SAPIENS_HF_DEBUG=1`; library hints such as `pass KEY=...` are pointed
at `--config`. Standard library only, shared by the parser (`sapiens_hf.cli`) and the commands."""

from __future__ import annotations

import os
import re


DEBUG_ENV = "SAPIENS_HF_DEBUG"  # set to 1: tracebacks instead of one-line errors
EXIT_FAILED, EXIT_USAGE = 1, 2  # some inputs failed / the model cannot be loaded; bad arguments


class CommandError(Exception):
    """Ends a command with these lines on stderr and this exit code, without a traceback."""

    def __init__(self, code: int, lines: list[str]):
        super().__init__("\n".join(lines))
        self.code, self.lines = code, lines


def usage_error(problems: list[str]) -> CommandError:
    return CommandError(EXIT_USAGE, [f"error: {problem}" for problem in problems])


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def with_cli_hint(error: Exception) -> str:
    """The first line of an error, pointing a library hint such as `pass num_attention_heads=...` to --config."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hint = re.search(r"pass (\w+)=\.\.\.", message)
    return f"{message} (on the command line: --config {hint[1]}=VALUE)" if hint else message
