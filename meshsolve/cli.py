"""The meshsolve command line (the only module that imports click).

Exit codes follow sysexits as istioctl does: 0 fine, 64 usage, 65 bad input data,
79 some property refuted (findings), 80 inconclusive (solver unknown / timeout).
"""

from __future__ import annotations

import sys

import click

from meshsolve.errors import MeshsolveError, ParseError

EXIT_OK = 0
EXIT_USAGE = 64
EXIT_DATAERR = 65
EXIT_FINDINGS = 79
EXIT_UNKNOWN = 80


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meshsolve")
def cli() -> None:
    """Prove, refute and synthesize sidecar traffic-capture set-ups."""


# --- subcommands are added below, one section each ---------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps meshsolve errors to one-line messages and sysexits codes."""
    try:
        cli.main(args=argv, prog_name="meshsolve", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        return 130
    except ParseError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_DATAERR
    except MeshsolveError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_DATAERR
    except SystemExit as exc:  # commands end with ctx.exit(code)
        return int(exc.code or 0)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
