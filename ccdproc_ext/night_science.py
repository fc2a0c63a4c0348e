"""The science frames of a night: one task each, run here, in worker processes or on
any executor, and the table of what they made.

Stages 4 and 5 of `~ccdproc_ext.reduce_night`: `science_tasks` makes a
`~ccdproc_ext.science.ScienceTask` for every usable science frame whose masters were
built (with the plan's edit of the frame, written in its header as ``PLANEDIT``);
`run_tasks` runs those whose output is not up to date; `science_table` is the night's
``science`` table, the errors of the tasks problems of the night and their warnings its
notes.
"""

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from tqdm.auto import tqdm

from ._workers import start_worker
from .exceptions import CcdprocExtError, InternalError
from .night_masters import MASTER_KINDS
from .outputs import file_stamp, inside, output_name, recipe, recorded_header
from .plans import EDIT_CARD
from .science import (
    MasterRef,
    ScienceOutcome,
    ScienceTask,
    clear_master_cache,
    prepare_masters,
    process_context,
    run_task,
)

__all__ = ["NightTask", "run_tasks", "science_table", "science_tasks"]


@dataclass(frozen=True)
class NightTask:
    """A science task with the plan's names of its raw file and masters."""

    file: str
    bias: str
    dark: str
    flat: str
    task: ScienceTask
    bpm: str = ""


def science_tasks(plan, collection, masters, options, log):
    """A task for every usable science frame whose masters were built.

    Parameters
    ----------
    plan : `~astropy.table.Table`
        The night's plan.
    collection : `~ccdproc_ext.NightCollection`
        The night's frames.
    masters : `~ccdproc_ext.night_masters.NightMasters`
        The masters built.
    options
        The night's settings.
    log : `~ccdproc_ext.log.NightLog`
        A science frame whose master could not be built is a problem of it.

    Returns
    -------
    tasks : list of `NightTask`
    unbuilt : dict
        ``name -> reason`` of every master a science frame needed and did not get.
    """
    tasks, unbuilt, used_names = [], {}, set()
    folder = log.output_dir / "science"
    for row in plan:
        if row["type"] != "science" or row["status"] != "ok":
            continue
        broken = [row[k] for k in MASTER_KINDS if row[k] and row[k] not in masters.built]
        if broken:
            for name in broken:
                unbuilt.setdefault(name, str(masters.failed.get(name,
                                                                CcdprocExtError("not built"))))
            cause = masters.failed.get(broken[0], CcdprocExtError())
            log.problem(row["file"], type(cause)("; ".join(
                f"master {m}: {masters.failed.get(m, 'not built')}" for m in broken)))
            continue
        output = inside(folder / output_name(row["file"], used_names), folder)
        tasks.append(_night_task(row, output, collection, masters, options))
    return tasks, unbuilt


def _night_task(row, output, collection, masters, options):
    """The task of the science frame of plan row ``row``, written to ``output``."""
    refs = {k: MasterRef.of(masters.path(k, row[k]), masters.built[row[k]].checksum)
            for k in MASTER_KINDS if row[k]}
    bpm = masters.bpm_of.get((row["dark"], row["flat"]), "")
    if bpm:
        refs["bpm"] = MasterRef.of(masters.path("bpm", bpm), masters.built[bpm].checksum)
    scale = float(row["dark_scale"]) if row["dark"] else np.nan
    task_recipe = recipe(options.settings(), file_stamp(collection.path(row["file"])),
                         {k: ref.checksum for k, ref in refs.items()},
                         None if not np.isfinite(scale) else scale,
                         options.gain_correct, options.create_deviation,
                         options.write_uncertainty, str(options.cosmic_rays))
    return NightTask(row["file"], row["bias"], row["dark"], row["flat"], ScienceTask(
        raw_path=collection.path(row["file"]), output=output, profile=options.profile,
        masters=refs, dark_scale=scale, recipe=task_recipe,
        gain_correct=options.gain_correct, create_deviation=options.create_deviation,
        write_uncertainty=options.write_uncertainty, dtype=options.dtype,
        cosmic_rays=options.cosmic_rays, plan_edit=str(row["edit"] or "")), bpm=bpm)


def _up_to_date(task, options):
    """The outcome of a task whose output is up to date (decided from its recorded recipe
    and plan edit, its header read once), or ``None``."""
    header = None if options.overwrite else recorded_header(task.output, task.recipe)
    if header is None or (header.get(EDIT_CARD) or "") != task.plan_edit:
        return None
    return ScienceOutcome.from_header("up to date", header)


def run_tasks(night_tasks, masters, options, log, *, executor, progress, on_result=None):
    """Run the tasks; returns one `~ccdproc_ext.science.ScienceOutcome` or error per task.

    Outputs already up to date are read here; only the others are run. Without an
    executor, the masters are prepared here once, and reach the worker processes through
    fork without being read again.

    Parameters
    ----------
    night_tasks : list of `NightTask`
    masters : `~ccdproc_ext.night_masters.NightMasters`
    options
        The night's settings (``overwrite``, ``strict``, ``workers``).
    log : `~ccdproc_ext.log.NightLog`
        Unexpected errors become `~ccdproc_ext.InternalError` there.
    executor : `concurrent.futures.Executor` or None
        Where the tasks run; ``None``: here, or in worker processes of this machine.
    progress : bool
        Show a progress bar (on a terminal).
    on_result : callable or None, optional
        ``on_result(night_task, outcome)`` for each task run in another process (a worker
        process, or the executor's), as its outcome arrives, while the others run; from
        the calling thread. Default is ``None``.

    Returns
    -------
    list
    """
    outcomes = [_up_to_date(night_task.task, options) for night_task in night_tasks]
    to_do = [index for index, outcome in enumerate(outcomes) if outcome is None]
    if not to_do:
        return outcomes
    own_executor = None
    if executor is None:
        prepare_masters([night_tasks[i].task for i in to_do], masters.by_file_stem())
        workers = (os.cpu_count() or 1) if options.workers is None else int(options.workers)
        if workers > 1 and len(to_do) > 1:
            own_executor = executor = ProcessPoolExecutor(
                min(workers, len(to_do)), mp_context=process_context(),
                initializer=start_worker, initargs=(os.getpid(),))  # they end with it
    bar = tqdm(total=len(to_do), desc="science", unit="frame",
               disable=None if progress else True)
    try:
        if executor is not None:
            pending = [executor.submit(run_task, night_tasks[i].task) for i in to_do]
            results = (future.result for future in pending)
        else:
            results = (lambda task=night_tasks[i].task: run_task(task) for i in to_do)
        for index, result_of in zip(to_do, results, strict=False):
            try:
                outcomes[index] = result_of()
            except Exception as err:  # a bug must not end the night
                file = night_tasks[index].file
                err = log.unexpected(err, file)
                if options.strict:
                    raise err if not isinstance(err, InternalError) else \
                        InternalError(f"{file}: {err}") from None
                outcomes[index] = err
            else:
                if on_result is not None and executor is not None:
                    on_result(night_tasks[index], outcomes[index])
            bar.update(1)
    finally:
        bar.close()
        if own_executor is not None:
            own_executor.shutdown(cancel_futures=True)
        clear_master_cache()
    return outcomes


def science_table(night_tasks, outcomes, log):
    """The night's ``science`` table, one row per task; the errors of tasks are problems
    in ``log``, their warnings notes.

    Parameters
    ----------
    night_tasks : list of `NightTask`
    outcomes : list
        What `run_tasks` returned for them.
    log : `~ccdproc_ext.log.NightLog`

    Returns
    -------
    `~astropy.table.Table`
    """
    rows = []
    for night_task, outcome in zip(night_tasks, outcomes, strict=True):
        if isinstance(outcome, Exception):
            log.problem(night_task.file, outcome)
            continue
        for kind, text in outcome.notes:
            log.note(night_task.file, kind, text)
        task = night_task.task
        rows.append((night_task.file, str(task.output), night_task.bias, night_task.dark,
                     night_task.flat, task.dark_scale, outcome.sky_level,
                     outcome.sky_noise, outcome.n_saturated, outcome.n_masked,
                     outcome.status, night_task.bpm, outcome.n_cosmic_rays))
    names = ("raw_file", "output_file", "bias", "dark", "flat", "dark_scale", "sky_level",
             "sky_noise", "n_saturated", "n_masked", "status", "bpm", "n_cosmic_rays")
    if not rows:
        return Table(names=names,
                     dtype=("U", "U", "U", "U", "U", "f8", "f8", "f8", "i8", "i8", "U", "U",
                            "i8"))
    table = Table(rows=rows, names=names)
    for name in ("dark_scale", "sky_level", "sky_noise"):
        table[name].format = ".4g"
    return table
