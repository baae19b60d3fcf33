"""Batches across databases: ratio / proportional / temperature sampling, resumable.

The draws of an epoch form one stream, identical on every rank:

* Database ``d`` is drawn with probability ``p_d``. Its draws are spread evenly over the stream
  ("stride" scheduling with a random phase ``u_d`` per epoch): after ``t`` draws in total it has
  been drawn ``C_d(t) = floor(t·p_d) + [frac(t·p_d) > u_d]`` times, so every ratio holds to
  within one structure at every point of the stream. The stream is cut into windows of
  ``WINDOW`` draws, each shuffled, so batches mix databases at random.
* Database ``d``'s ``j``-th draw (counted across epochs) is item ``π_c(j mod n_d)`` where
  ``c = j div n_d`` and ``π_c`` is a keyed pseudo-random permutation (a Feistel network, O(1)
  memory for any size). Hence each database is visited without replacement, cycle after cycle;
  with proportional sampling an epoch visits every structure exactly once.
* Batches are consecutive runs of the stream: ``batch_size`` structures, or as many as fit in
  ``max_atoms`` atoms (a structure larger than that forms a batch alone). The epoch's last
  batch may be short. These are global batches: in a multi-process run every rank draws the
  same ones and takes its share of each (``sevenomni.train.data.RankSlice``), so every rank
  steps the same number of times.

Everything is a function of (seed, epoch, position); nothing depends on the process, so a
state saved mid-epoch resumes the identical order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from sevenomni.data.spec import SamplingSpec

WINDOW = 4096
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (vectorized, wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def permutation_keys(*entropy: int) -> np.ndarray:
    """Four 64-bit round keys from integers (seed, database, cycle, …)."""
    return np.random.SeedSequence([int(e) & 0xFFFFFFFF for e in entropy]).generate_state(4, dtype=np.uint64)


def permute(positions: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """Items at ``positions`` of a keyed pseudo-random permutation of ``range(n)``.

    A balanced Feistel network over the smallest even-bit domain ≥ n, restricted to ``range(n)``
    by cycle walking: a bijection for every n, computed element-wise in O(1) memory.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if n <= 1:
        return np.zeros_like(positions)
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    x = positions.astype(np.uint64)
    todo = np.arange(len(x))
    while len(todo):
        left, right = x[todo] >> shift, x[todo] & mask
        for key in keys:
            left, right = right, left ^ (_mix64(right ^ key) & mask)
        x[todo] = (left << shift) | right
        todo = todo[x[todo] >= np.uint64(n)]
    return x.astype(np.int64)


def database_probabilities(
    sizes: Sequence[int], weights: Sequence[float | None] | None, mode: str, temperature: float = 1.0
) -> list[Fraction]:
    """Exact (rational) sampling probability of each database."""
    d = len(sizes)
    weights = list(weights) if weights is not None else [None] * d
    if len(weights) != d:
        raise ValueError(f"{len(weights)} weights for {d} databases")
    given = [i for i, w in enumerate(weights) if w is not None]
    if mode == "ratio":
        missing = [i for i, w in enumerate(weights) if w is None]
        if missing:
            raise ValueError(f"sampling mode 'ratio' needs a weight for every database; database(s) {missing} have none")
        raw = [Fraction(float(w)) for w in weights]
    else:
        if given:
            raise ValueError(
                f"database(s) {given} have a sampling weight, but weights apply only in mode 'ratio' (mode is {mode!r})"
            )
        if mode == "proportional":
            raw = [Fraction(int(n)) for n in sizes]
        elif mode == "temperature":
            raw = [Fraction(float(n) ** (1.0 / temperature)) if n > 0 else Fraction(0) for n in sizes]
        else:
            raise ValueError(f"unknown sampling mode {mode!r}")
    if any(w < 0 for w in raw):
        raise ValueError(f"sampling weights must be >= 0, got {[float(w) for w in raw]}")
    for i, (w, n) in enumerate(zip(raw, sizes)):
        if w > 0 and n == 0:
            raise ValueError(f"database {i} is empty but has sampling weight {float(w)}")
    total = sum(raw)
    if total == 0:
        raise ValueError("all sampling weights are zero")
    return [w / total for w in raw]


class MultiDatabaseSampler(Sampler[list[int]]):
    """Batch sampler over a ``ConcatDataset`` of databases; yields lists of global indices."""

    def __init__(
        self,
        sizes: list[int],
        atom_counts: list[np.ndarray],
        spec: SamplingSpec,
        weights: list[float | None] | None = None,
    ) -> None:
        if not sizes:
            raise ValueError("no databases to sample from")
        if len(atom_counts) != len(sizes):
            raise ValueError(f"{len(atom_counts)} atom-count arrays for {len(sizes)} databases")
        for i, (n, counts) in enumerate(zip(sizes, atom_counts)):
            if len(counts) != n:
                raise ValueError(f"database {i}: {len(counts)} atom counts for {n} structures")
        self.sizes = [int(n) for n in sizes]
        self.atom_counts = atom_counts
        self.spec = spec
        self.probabilities = database_probabilities(self.sizes, weights, spec.mode, spec.temperature)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.epoch_size = int(spec.epoch_size or sum(self.sizes))
        self.epoch = 0
        self.position = 0
        self._length_cache: dict[int, int] = {}
        self._active_epoch = 0
        self._base_cache: dict[int, list[int]] = {0: [0] * len(self.sizes)}

    # -- state -------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (keeps a restored mid-epoch position if it is the same epoch)."""
        if epoch != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Epoch and position (batches already taken in the epoch).

        A DataLoader prefetches, so the sampler may have yielded (and even finished the epoch)
        ahead of the training loop: pass ``consumed``, the number of batches of the epoch being
        iterated that the loop actually used, to save exactly that point.
        """
        epoch, position = self.epoch, self.position
        if consumed is not None:
            epoch, position = self._active_epoch, int(consumed)
            if position >= self.epoch_length(epoch):
                epoch, position = epoch + 1, 0
        return {
            "epoch": epoch,
            "position": position,
            "seed": self.spec.seed,
            "probabilities": [str(p) for p in self.probabilities],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed", self.spec.seed) != self.spec.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this sampler {self.spec.seed}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])

    # -- the stream --------------------------------------------------------------------------

    def _phases(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.spec.seed, epoch, 1]).random(len(self.sizes))

    def _cumulative(self, t: int, phases: np.ndarray) -> list[int]:
        """C_d(t): draws of each database after ``t`` draws of the epoch."""
        out = []
        for p, u in zip(self.probabilities, phases):
            x = p * t
            whole = x.numerator // x.denominator
            out.append(whole + int(float(x - whole) > u))
        return out

    def _base(self, epoch: int) -> list[int]:
        """Draws of each database in all epochs before ``epoch`` (cycles continue across epochs)."""
        known = max(e for e in self._base_cache if e <= epoch)
        base = list(self._base_cache[known])
        for e in range(known, epoch):
            base = [b + c for b, c in zip(base, self._cumulative(self.epoch_size, self._phases(e)))]
            self._base_cache[e + 1] = list(base)
        return base

    def _draw_items(self, d: int, start: int, stop: int) -> np.ndarray:
        """Local items of database d's draws start..stop-1 (counted across epochs)."""
        n = self.sizes[d]
        j = np.arange(start, stop, dtype=np.int64)
        out = np.empty(len(j), dtype=np.int64)
        cycles = j // n
        for cycle in np.unique(cycles):
            mask = cycles == cycle
            out[mask] = permute(j[mask] - cycle * n, n, permutation_keys(self.spec.seed, d, int(cycle), 7))
        return out

    def _windows(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
        """(global indices, atom counts, is the epoch's last window) per shuffled window."""
        phases = self._phases(epoch)
        base = self._base(epoch)
        previous = self._cumulative(0, phases)
        t, k = 0, 0
        while True:
            t_next = min(t + WINDOW, self.epoch_size)
            current = self._cumulative(t_next, phases)
            indices = [np.empty(0, dtype=np.int64)]
            natoms = [np.empty(0, dtype=np.int64)]
            for d, (a, b) in enumerate(zip(previous, current)):
                if b > a:
                    local = self._draw_items(d, base[d] + a, base[d] + b)
                    indices.append(local + self.offsets[d])
                    natoms.append(np.asarray(self.atom_counts[d][local], dtype=np.int64))
            indices_all, natoms_all = np.concatenate(indices), np.concatenate(natoms)
            order = np.random.default_rng([self.spec.seed, epoch, 2, k]).permutation(len(indices_all))
            yield indices_all[order], natoms_all[order], t_next == self.epoch_size
            if t_next == self.epoch_size:
                return
            previous, t, k = current, t_next, k + 1

    def _epoch_batches(self, epoch: int) -> Iterator[np.ndarray]:
        """The epoch's batches in stream order (the last may be short)."""
        pending_idx = np.empty(0, dtype=np.int64)
        pending_atoms = np.empty(0, dtype=np.int64)
        for indices, natoms, last in self._windows(epoch):
            pending_idx = np.concatenate([pending_idx, indices])
            pending_atoms = np.concatenate([pending_atoms, natoms])
            used = 0
            for stop in self._cuts(pending_atoms, flush=last):
                yield pending_idx[used:stop]
                used = stop
            pending_idx, pending_atoms = pending_idx[used:], pending_atoms[used:]

    def _cuts(self, natoms: np.ndarray, flush: bool) -> Iterator[int]:
        """End positions of the complete batches in ``natoms`` (and of a short last one if flush)."""
        n = len(natoms)
        if self.spec.batch_size is not None:
            size = self.spec.batch_size
            stop = size
            while stop <= n:
                yield stop
                stop += size
            if flush and stop - size < n:
                yield n
            return
        limit = self.spec.max_atoms
        cumulative = np.cumsum(natoms)
        start, before = 0, 0
        while start < n:
            stop = int(np.searchsorted(cumulative, before + limit, side="right"))
            stop = max(stop, start + 1)  # an oversized structure forms a batch alone
            if stop >= n and not flush:
                return  # the batch might still grow with the next window's draws
            yield stop
            before = int(cumulative[stop - 1])
            start = stop

    # -- torch interface ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[list[int]]:
        """The batches of the current epoch from the saved position; then epoch += 1."""
        epoch, skip, count = self.epoch, self.position, 0
        self._active_epoch = epoch
        for number, batch in enumerate(self._epoch_batches(epoch)):
            if number >= skip:
                self.position = number + 1
                yield batch.tolist()
            count = number + 1
        self._length_cache[epoch] = count
        if self.epoch == epoch:
            self.epoch, self.position = epoch + 1, 0

    def __len__(self) -> int:
        """Batches in the current epoch."""
        return self.epoch_length(self.epoch)

    def epoch_length(self, epoch: int) -> int:
        """Batches in epoch ``epoch``."""
        if epoch not in self._length_cache:
            if self.spec.batch_size is not None:
                draws = sum(self._cumulative(self.epoch_size, self._phases(epoch)))
                self._length_cache[epoch] = -(-draws // self.spec.batch_size)
            else:
                self._length_cache[epoch] = sum(1 for _ in self._epoch_batches(epoch))
        return self._length_cache[epoch]
