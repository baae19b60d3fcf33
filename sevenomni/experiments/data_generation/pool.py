"""The resumable parallel pool: computes every chunk that is not cached yet, in spawned one-thread
worker processes, and restarts the pool if a worker dies.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sevenomni.experiments.data_generation.cache import atomic_write_text, atomic_write_xyz, chunk_stem, is_cached
from sevenomni.experiments.data_generation.chunks import RUNNERS
from sevenomni.experiments.data_generation.threads import limit_threads, single_threaded


def compute_chunk(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """Run one chunk and store it in the cache (the .json is the completion marker)."""
    spec, cache_dir_s = job
    cache_dir = Path(cache_dir_s)
    stem = chunk_stem(spec)
    t0 = time.perf_counter()
    with single_threaded():
        images, skipped = RUNNERS[spec["kind"]](spec, cache_dir)
    meta = {"stem": stem, "spec": spec, "n": len(images), "skipped": dict(skipped),
            "compute_time_s": round(time.perf_counter() - t0, 3), "pid": os.getpid()}
    atomic_write_xyz(cache_dir / f"{stem}.extxyz", images)
    atomic_write_text(cache_dir / f"{stem}.json", json.dumps(meta, indent=1, sort_keys=True))
    return meta


def _worker_init() -> None:
    limit_threads()


MAX_POOL_RESTARTS = 2


def run_chunks(specs: Sequence[dict[str, Any]], cache_dir: Path, workers: int, desc: str,
               progress: bool, log: Callable[[str], None] = print) -> dict[str, int]:
    """Compute every spec whose chunk is not cached; returns {'computed', 'cached'}.

    With ``workers > 1`` chunks run in spawned processes (one thread each); a
    caller that is a script must then guard its entry point with
    ``if __name__ == "__main__":``.  A dead worker process (e.g. a crash in a
    native library) restarts the pool for the unfinished chunks
    (MAX_POOL_RESTARTS times); finished chunks are kept in the cache anyway.
    """
    from tqdm import tqdm

    todo = [s for s in specs if not is_cached(cache_dir, chunk_stem(s))]
    n_cached = len(specs) - len(todo)
    bar = tqdm(total=len(specs), initial=n_cached, desc=desc, unit="chunk",
               disable=not progress, dynamic_ncols=True)
    n_struct = 0

    def report(meta):
        nonlocal n_struct
        n_struct += meta["n"]
        bar.update(1)
        bar.set_postfix(structures=n_struct, last=meta["spec"]["source"][:18])
        if meta["skipped"]:
            sp = meta["spec"]
            msg = f"  {sp['kind']} {sp['source']} ({sp['split']}): skipped {meta['skipped']}"
            bar.write(msg) if progress else log(msg)

    remaining = [(s, str(cache_dir)) for s in todo]
    if workers <= 1 or len(remaining) <= 1:
        for job in remaining:
            report(compute_chunk(job))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        limit_threads()  # inherited by the spawned workers
        restarts = 0
        while remaining:
            ex = ProcessPoolExecutor(max_workers=min(workers, len(remaining)),
                                     mp_context=mp.get_context("spawn"), initializer=_worker_init)
            try:
                futures = {ex.submit(compute_chunk, job): k for k, job in enumerate(remaining)}
                done = set()
                try:
                    for fut in as_completed(futures):
                        report(fut.result())
                        done.add(futures[fut])
                except BrokenProcessPool:
                    restarts += 1
                    if restarts > MAX_POOL_RESTARTS:
                        raise RuntimeError(
                            "worker processes keep dying (is the calling script guarded by "
                            "`if __name__ == '__main__'`?); finished chunks are cached, rerun to resume") from None
                    log(f"[make_multifidelity_data] a worker process died; restarting the pool "
                        f"({restarts}/{MAX_POOL_RESTARTS})")
                remaining = [job for k, job in enumerate(remaining) if k not in done]
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
    bar.close()
    return {"computed": len(todo), "cached": n_cached}
