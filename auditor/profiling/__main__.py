"""`python -m allocaudit.auditor.profiling {profile,stale-check,compare,plot} ...`.

The same commands as `allocaudit profile`, `stale-check`, `compare` and `plot`, registered the
way the `allocaudit` app registers them; usable before, and tested apart from, the main CLI.
"""

import typer

from allocaudit.auditor.profiling.commands import (
    PROGRAM_CONTEXT,
    compare_command,
    plot_command,
    profile_command,
    stale_check_command,
)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
app.command("profile", context_settings=PROGRAM_CONTEXT)(profile_command)
app.command("stale-check", context_settings=PROGRAM_CONTEXT)(stale_check_command)
app.command("compare")(compare_command)
app.command("plot")(plot_command)

if __name__ == "__main__":
    app()
