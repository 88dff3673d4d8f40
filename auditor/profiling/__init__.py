"""The dynamic auditor: measure allocations at run time, join them with the static scan.

`profile.py`, `join.py`, `compare.py`, `timeline.py`, `plots.py` and `commands.py` import no
torch; `tracer.py`, `runner.py` and `stale.py` do, and are imported only when a profile or a
stale-read check runs. `plots.py` imports matplotlib (the `plot` extra) only when it draws.

    from allocaudit.auditor.profiling.tracer import profile_allocations
    with profile_allocations(device="any") as recorder:
        model(x)
    print(recorder.profile().top(5))
"""
