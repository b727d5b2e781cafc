"""What every ``ztauthz`` command shares: the exit codes and the help layout.

Exit codes (``ztauthz --help`` prints this table; docs/cli.md explains it):

===  =========================================================================================
0    success (``explain``: allow)
1    a check or a test failed: ``policy check`` found errors, ``policy test`` a failing case,
     ``explain`` a deny, ``dev stack --check`` a request not answered as expected
2    usage or configuration error: bad options, an invalid configuration or policy directory,
     a start-up error (a port in use, an unsupported ``OTEL_PROPAGATORS``): one line on stderr
3    an unexpected internal error (a bug): the traceback is printed on stderr
130  interrupted (Ctrl-C) where the work was not finished (``dev stack --check``)
141  standard output closed early (e.g. piped into ``head``): the rest is dropped quietly
===  =========================================================================================

Results go to stdout, diagnostics (problems, summaries, notes) to stderr.
Only argparse is imported here.
"""

from __future__ import annotations

import argparse
from typing import Final

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERNAL: Final = 3
EXIT_INTERRUPTED: Final = 130
EXIT_BROKEN_PIPE: Final = 141  # 128 + SIGPIPE, as a shell reports a process SIGPIPE ended

EXIT_CODES_HELP: Final = """\
exit codes:
  0    success (explain: allow)
  1    a check or test failed (policy check errors, a failing policy test, explain: deny,
       dev stack --check: a request not answered as expected)
  2    usage or configuration error, including start-up errors (a port in use, an
       unsupported OTEL_PROPAGATORS): one line on stderr names the cause
  3    unexpected internal error (a bug; the traceback is printed)
  130  interrupted before the work was done
  141  stdout closed early (e.g. piped into head)

Results are printed on stdout, diagnostics on stderr. Docs: docs/cli.md."""


class HelpFormatter(argparse.HelpFormatter):
    """One-paragraph descriptions wrapped, multi-line ones (the exit-code table) as written;
    every option's default appended to its help (unless the option is required, has no
    default, or its help already names it)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or action.required
            or default in (None, False, argparse.SUPPRESS)
            or default == []
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str | None = None,
    **kwargs: object,
) -> argparse.ArgumentParser:
    """A subcommand with the shared help layout: ``summary`` in its parent's list, and as its
    own description (a sentence) unless a longer one is given."""
    sentence = summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else ".")
    return sub.add_parser(
        name,
        help=summary,
        description=description or sentence,
        formatter_class=HelpFormatter,
        **kwargs,  # type: ignore[arg-type]
    )
