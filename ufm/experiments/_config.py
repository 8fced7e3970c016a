"""One entry style for every experiment: ``run(config) -> Report`` with a frozen, typed config.

The configs of experiments with several tasks (`align`, `dmap`) hold the union of the tasks'
settings, each ``None`` by default (the task's own default applies); `call_task` passes the set
ones to the task's function and refuses a setting the task does not take (ValueError naming it).
"""

from __future__ import annotations

import dataclasses
import inspect

__all__ = ["call_task"]


def call_task(config, tasks: dict, **extra):
    """``tasks[config.task](**set fields of config, **extra)``; ValueError for an unknown task or a
    set field the task does not take."""
    if config.task not in tasks:
        raise ValueError(f"task must be one of {tuple(tasks)}, got {config.task!r}")
    fn = tasks[config.task]
    accepted = inspect.signature(fn).parameters
    kwargs = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "task" or value is None:
            continue
        if f.name not in accepted:
            raise ValueError(f"{f.name} does not apply to task {config.task!r}")
        kwargs[f.name] = value
    return fn(**kwargs, **extra)
