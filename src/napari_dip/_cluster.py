"""Who runs the units: this process, one after the other, or dask.distributed workers.

Both take the same ``(unit, payload)`` jobs, call :func:`napari_dip.engine.units.run_unit`
with them and hand each result to the same ``handle``; only the order of the results differs.
Nothing here schedules work itself: dask.distributed does, and retries a unit that failed for
another reason than its input (a lost worker, out of memory) up to :data:`RETRIES` times.
"""

from __future__ import annotations

import logging
import os
import sys

#: How often a unit that failed for another reason than its input (a lost worker, out of
#: memory) is tried again before it is reported as failed.
RETRIES = 2


class SerialUnits:
    """Units one after the other in this process (the default), or, with the ``batch`` option
    (``--batch N``; by default on CUDA), N units of one shape at a time as independent networks
    in one pass."""

    slots = 1
    remote = False

    def __init__(self, threads: int | None):
        self.threads = threads

    def run(self, jobs, handle, cancel, progress):
        from .engine.units import batch_size

        jobs, size, carry = iter(jobs), None, None
        while not cancel.is_set():
            first, carry = carry or next(jobs, None), None
            if first is None:
                return
            size = size or batch_size(first[1])
            group = [first]
            while len(group) < size:  # consecutive units of one shape are fitted together
                nxt = next(jobs, None)
                if nxt is None:
                    break
                if nxt[1]["data"].shape != first[1]["data"].shape:
                    carry = nxt
                    break
                group.append(nxt)
            (self._together if len(group) > 1 else self._each)(group, handle, cancel, progress)

    def _together(self, group, handle, cancel, progress):
        """A batch of units as independent networks in one pass (``--batch``); if the batch
        fails for another reason than its input, the units not yet done run one at a time."""
        from .engine.units import run_unit_batch

        left = dict(enumerate(group))
        try:
            for k, out in run_unit_batch([p for _, p in group], cancel=cancel,
                                         callback=progress):
                handle(left.pop(k)[0], out)
        except Exception:  # noqa: BLE001 - retried one at a time, where errors are reported
            self._each(list(left.values()), handle, cancel, progress)

    def _each(self, group, handle, cancel, progress):
        from .engine.units import run_unit

        for unit, payload in group:
            out = error = None
            for _ in range(RETRIES + 1):
                try:
                    out = run_unit(**payload, cancel=cancel, callback=progress)
                    break
                except Exception as exc:  # noqa: BLE001 - retried, then reported
                    error = exc
                    if isinstance(exc, MemoryError):
                        break
            if out is None:
                out = {"status": "error", "error": f"{type(error).__name__}: {error}"}
            handle(unit, out)
            if cancel.is_set():
                return

    def close(self):
        pass


class DaskUnits:
    """Units on dask.distributed workers: a LocalCluster of N processes, or a scheduler."""

    remote = True

    def __init__(self, workers: int | None, scheduler: str | None, threads: int | None):
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ValueError('--workers and --scheduler need dask.distributed: pip install '
                             '"napari-dip[big]"') from exc
        self.cluster = None
        if scheduler:
            self.client = Client(scheduler, timeout="30s")
            self.threads = threads  # remote workers: NAPARI_DIP_THREADS or their load decides
        else:
            if workers < 1:
                raise ValueError(f"--workers must be at least 1, not {workers}")
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
                os.cpu_count() or 1)
            gpu = _has_cuda()
            # One fit per worker at a time (one task thread); a GPU worker says so, so that
            # tasks that ask for a GPU never share one.
            self.cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR,
                resources={"GPU": 1} if gpu else None)
            self.client = Client(self.cluster)
            self.threads = threads or max(1, cores // workers)
        info = self.client.scheduler_info()["workers"].values()
        self.slots = max(1, sum(w.get("nthreads", 1) for w in info))
        self.resources = {"GPU": 1} if any(
            "GPU" in (w.get("resources") or {}) for w in info) else None

    def run(self, jobs, handle, cancel, progress):
        from distributed import as_completed

        from .engine.units import run_unit

        token = os.urandom(4).hex()
        running, queue = {}, as_completed()
        jobs = iter(jobs)

        def submit() -> bool:
            job = next(jobs, None)
            if job is None:
                return False
            unit, payload = job
            if payload["data"].nbytes > 2**20:  # big pixels travel once, beside the task
                payload = {**payload, "data": self.client.scatter(payload["data"])}
            future = self.client.submit(run_unit, **payload, key=f"dip-{token}-{unit.key}",
                                        retries=RETRIES, pure=False, resources=self.resources)
            running[future.key] = unit
            queue.add(future)
            return True

        for _ in range(self.slots):
            if not submit():
                break
        for future in queue:
            unit = running.pop(future.key)
            try:
                out = future.result()
            except Exception as exc:  # noqa: BLE001 - failed after its retries: reported
                out = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            future.release()
            handle(unit, out)
            if cancel.is_set():
                if running:
                    print(f"\nwaiting for the {len(running)} running unit(s) to finish; "
                          "Ctrl-C again to abort (finished units are kept)", file=sys.stderr)
                continue
            submit()

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False
