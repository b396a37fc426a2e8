"""`training-agent train`: one project's run in this process, or this process's rank of a torchrun launch."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from typing import TYPE_CHECKING

from training_agent.core import logs
from training_agent.core.settings import Settings
from training_agent.trainer.placement import place

if TYPE_CHECKING:  # the trainer's modules import torch: only when a run starts
    from training_agent.core.records import RecordsStore
    from training_agent.trainer.group import Group
    from training_agent.trainer.interrupt import StopSignal
    from training_agent.trainer.result import RunResult


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from training_agent.core.records import open_records

    where = place()
    records = None
    # A lone trainer refuses a project that is not there, or not its to take, before importing torch (seconds
    # to say one line). Not under torchrun: every rank must join the group before any of them may leave.
    if not where.distributed:
        records = open_records(settings)
        refused = _refused_early(args, settings, records)
        if refused is not None:
            return _report(args, refused)
    from training_agent.core.storage import ObjectStorage
    from training_agent.trainer.allocator import keep_freed_memory
    from training_agent.trainer.follower import follow
    from training_agent.trainer.group import SOLO, die_with_launcher, join, leave
    from training_agent.trainer.interrupt import StopSignal
    from training_agent.trainer.replica import pick_device
    from training_agent.trainer.threads import set_compute_threads

    # torch, torchvision and what they import (torch._dynamo, sympy) are ~3 million objects that live until
    # the process ends: keep them out of every garbage collection, the one at exit included (~1 s a run).
    gc.freeze()
    if settings.malloc_tuning:
        keep_freed_memory()
    # Kubernetes and the local executor stop a trainer with SIGTERM: checkpoint, then exit for a retry.
    # (torchrun passes the signal on to every rank.)
    stop = StopSignal()
    stop.install()
    set_compute_threads(settings.cpu_threads, where.local_processes)
    die_with_launcher()
    group = SOLO
    if where.distributed:
        # A lone trainer picks its device inside the run, where a missing GPU fails the project with why.
        device = pick_device(settings.device, where.local_rank)
        group = join(where, device, settings.distributed_timeout_seconds)
    try:
        if not group.leads:
            with logs.process_bound(args.project_id):
                return follow(group, settings, ObjectStorage(settings), stop)
        return _lead(args, settings, records if records is not None else open_records(settings), stop, group)
    finally:
        leave(group)


def _lead(
    args: argparse.Namespace, settings: Settings, records: RecordsStore, stop: StopSignal, group: Group
) -> int:
    """Rank 0 (or the only process): the whole run."""
    from training_agent.core.storage import ObjectStorage
    from training_agent.progress_bar import follow_reporter, progress_view
    from training_agent.trainer.pipeline import TrainingRun

    run = TrainingRun(
        args.project_id,
        settings=settings,
        records=records,
        storage=ObjectStorage(settings),
        claimed=args.claimed,
        stop=stop,
        group=group,
    )
    # One project per trainer process: every line it logs, from any thread, names the project and its run.
    with (
        logs.process_bound(args.project_id),
        progress_view(announce_epochs=False, bar=not args.no_progress_bar) as view,
    ):
        follow_reporter(run.progress, view)
        result = run.execute()
    return _report(args, result)


def _refused_early(args: argparse.Namespace, settings: Settings, records: RecordsStore) -> RunResult | None:
    from training_agent.trainer.claim import refused_early

    with logs.process_bound(args.project_id):
        return refused_early(records, args.project_id, claimed=args.claimed, agent_name=settings.agent_name)


def _report(args: argparse.Namespace, result: RunResult) -> int:
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    elif not result.succeeded and result.error:
        one_line = " ".join(str(result.error["message"]).split())  # as every CLI failure is reported
        print(f"training-agent: {one_line}", file=sys.stderr)
    return result.exit_code
