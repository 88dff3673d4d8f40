"""How every command reports a usage or input error: one line on stderr, exit code 2."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    typer.echo(f"allocaudit: error: {message}", err=True)
    raise typer.Exit(2)
