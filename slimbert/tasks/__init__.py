"""Tasks by name: ``get_task("squad")`` / ``get_task("nq")`` (see base.Task)."""

from __future__ import annotations

from slimbert.tasks.base import Task


def get_task(name: str) -> Task:
    if name == "squad":
        from slimbert.tasks.squad import TASK
    elif name == "nq":
        from slimbert.tasks.nq import TASK
    else:
        raise ValueError(f"task must be 'squad' or 'nq', got {name!r}")
    return TASK
