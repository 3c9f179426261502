"""A content-addressed store of stages (Psi_0, fine-tunes, evaluated cells), so sweeps resume and reuse fine-tunes.

An entry's key is a hash of exactly the fields that determine it (``fields``: plain JSON values derived from the
config blocks), e.g. Psi_0 depends on the seed and the model, a fine-tune adds the task and the SGD settings, an
evaluation adds the coefficient grid. Entries are ``.npz`` files (numpy, ``allow_pickle=False``: nothing executable is
ever loaded), written atomically, holding beside the arrays their fields, a SHA-256 of the arrays' bytes, and the
commit that wrote them.

An entry that cannot be read, fails its checksum, holds other fields than its key's, or has other shapes than the
config implies is never used and never fatal: one warning line names the file, the file is moved aside to
``<root>/quarantine/`` and the stage is recomputed, so a damaged cache heals on the next run with a cold run's numbers.
Every entry a run read is listed in its provenance with the commit that wrote it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import threading
import time
import zipfile
from pathlib import Path

import jax
import numpy as np

from tvtheory import results

log = logging.getLogger(__name__)

# Bump when the meaning of a cached quantity changes, or when a code change alters the numbers computed, so that
# entries from older code are never mixed with new ones. 2: the (A X) V^T product order of model.apply; 3: the
# four-matrix form's grids through the quadratic expansion; 4: the four-matrix form's dW and dV norms are the change
# of the merged weights; 5: keys derived from the config blocks, entries carry a checksum and their writer, pair
# evaluations add each fine-tune's own accuracy and a validation split; 6: the model and data options (model.arch,
# heads, width, rounds, radius; data.rho, classes, label_noise) join every key through the config blocks (the
# default path's numbers are unchanged); 7: XLA's elemental CPU emitters (tvtheory/__init__.py) and whole-tree
# task-vector programs, which move digits' ViT numbers by float rounding (every other experiment's are unchanged).
# 8: SGD on token ids for the paper's model once d >= 2P (sweep.ids_step), which moves scaling's fine-tunes at
# d = 64 and 128 by float rounding, grown by SGD (every other fine-tune is unchanged), and grid points' values
# gathered from the pattern table (model.grid_eval), which moves grid losses by float rounding (1e-7); 9: the
# ViT's grid points one at a time (vit.grid_eval), which moves digits' grid losses by float rounding (2e-7); 10:
# XLA's LLVM optimisation level 1 (tvtheory/__init__.py), which moves grid losses and similarities by float rounding
# (the last printed digit) and digits' ViT numbers as between machines (its Adam amplifies the rounding); the
# language model's are unchanged; 11: a grid point's attention-weighted sums as unrolled multiply-adds summed as
# balanced trees (model.grid_eval), which moves grid losses by float rounding (1e-7); 12: merging's vocab_grid
# points as the same fused loop, which moves merging's grid losses by float rounding; 13: practice's grid
# evaluations gather a point's values from the pattern table (model.grid_eval), the same products in another order,
# which may move them by float rounding (on the machine of the change, every table of practice byte-identical).
VERSION = 13


def canonical(fields: dict) -> str:
    """The fields as canonical JSON (sorted keys, arrays as lists), tagged with the cache VERSION."""
    return json.dumps({"_v": VERSION, **fields}, sort_keys=True, default=_plain)


def key(fields: dict) -> str:
    return hashlib.sha256(canonical(fields).encode()).hexdigest()[:20]


def _plain(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"cache key field of type {type(x).__name__} is not JSON")


def checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Damaged(ValueError):
    """A cached entry that must not be used (unreadable, failed checksum, other fields or shapes)."""


class Store:
    """Entries under ``root/<kind>/<key>.npz``. ``refresh=True`` ignores existing entries (and overwrites them)."""

    def __init__(self, root: str | Path, refresh: bool = False):
        self.root, self.refresh = Path(root), refresh
        self.hits, self.misses, self.healed = 0, 0, 0
        self.used: dict[str, str | None] = {}       # entry path -> commit that wrote it (provenance)
        self.timed: dict[str, float] = {}           # kind -> seconds spent computing its missing entries
        self._writer = None
        self.lock = threading.Lock()                # the counts above, for stages that run at once (sweep.stage_pool)

    def path(self, kind: str, fields: dict) -> Path:
        return self.root / kind / f"{key(fields)}.npz"

    def load(self, kind: str, fields: dict, like):
        """The cached pytree with the structure of ``like`` (arrays or ShapeDtypeStructs, or a function returning
        them, called only when an entry is there to read), or None (missing, or damaged: then moved aside with a
        warning)."""
        p = self.path(kind, fields)
        tree, writer = None, None
        if self.has(kind, fields):
            try:
                tree, writer = self._read(p, fields, like)
            except Damaged as e:
                self._quarantine(p, str(e))
        with self.lock:
            if tree is None:
                self.misses += 1
            else:
                self.hits += 1
                self.used[str(p)] = writer
        return tree

    def has(self, kind: str, fields: dict) -> bool:
        """Whether ``load`` would find an entry to read (it may still turn out damaged)."""
        return not self.refresh and self.path(kind, fields).exists()

    def _read(self, p: Path, fields: dict, like):
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise Damaged(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        meta = arrays.pop("__meta__", None)
        if meta is None:
            raise Damaged("no metadata (written by older code)")
        try:
            meta = json.loads(str(meta))
        except ValueError:
            raise Damaged("unreadable metadata") from None
        if meta.get("fields") != canonical(fields):
            raise Damaged("its fields differ from the requested ones (copied over another entry?)")
        if meta.get("checksum") != checksum(arrays):
            raise Damaged("its arrays fail their checksum (edited or corrupted)")
        leaves, treedef = jax.tree_util.tree_flatten_with_path(like() if callable(like) else like)
        out = []
        for path, want in leaves:
            name = jax.tree_util.keystr(path)
            got = arrays.get(name)
            if got is None or got.shape != tuple(want.shape) or got.dtype != np.dtype(want.dtype):
                have = "missing" if got is None else f"{got.dtype}{list(got.shape)}"
                raise Damaged(f"{name}: stored {have}, expected {np.dtype(want.dtype)}{list(want.shape)}")
            out.append(got)
        return jax.tree_util.tree_unflatten(treedef, out), meta.get("commit")

    def _quarantine(self, p: Path, why: str) -> None:
        dest = self.root / "quarantine" / f"{p.parent.name}-{p.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(p, dest)
        except OSError:
            p.unlink(missing_ok=True)
        with self.lock:
            self.healed += 1
        log.warning("cache entry %s is damaged (%s): moved to %s and recomputed", p, why, dest)

    def save(self, kind: str, fields: dict, tree) -> Path:
        p = self.path(kind, fields)
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        arrays = {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}
        if self._writer is None:
            self._writer = results.git_state()
        meta = {"fields": canonical(fields), "checksum": checksum(arrays), "commit": self._writer["commit"],
                "dirty": self._writer["dirty"], "version": VERSION}
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.array(json.dumps(meta)), **arrays)
        with results.atomic_path(p) as tmp:
            tmp.write_bytes(buf.getvalue())
        return p

    def summary(self) -> str:
        healed = f", {self.healed} damaged entries recomputed" if self.healed else ""
        return f"cache: {self.hits} entries reused, {self.misses} computed{healed}"

    def provenance(self) -> dict:
        """Which entries the run read and which commit wrote each (None: unknown)."""
        writers = sorted({str(w) for w in self.used.values()})
        return {"root": str(self.root), "reused": self.hits, "computed": self.misses, "healed": self.healed,
                "written_by": writers, "stage_seconds": self.stage_seconds(),
                "entries": dict(sorted(self.used.items()))}

    def stage_seconds(self) -> dict[str, float]:
        """Seconds spent computing each kind of entry (compilation included), most first."""
        return {k: round(v, 2) for k, v in sorted(self.timed.items(), key=lambda kv: -kv[1])}


class NoStore(Store):
    """Computes everything and keeps nothing (library use without a cache directory)."""

    def __init__(self):
        super().__init__(Path("/nonexistent"), refresh=True)

    def save(self, kind, fields, tree):
        return None

    def provenance(self) -> dict:
        return {"root": None, "stage_seconds": self.stage_seconds()}


def open_store(cfg) -> Store:
    """The store of a config's ``cache`` block."""
    return Store(cfg.dir, refresh=cfg.refresh) if cfg.dir else NoStore()


def per_seed(store: Store, kind: str, fields_of, seed_ids: np.ndarray, compute, like=None):
    """Each seed's entry of ``kind`` (fields ``fields_of(s)``), stacked along a leading seed axis: loaded where cached,
    the missing seeds computed in one call ``compute(ids)`` (a pytree with a leading axis over ids) and stored one by
    one. Results stay the same bits whichever seeds were cached, as long as ``compute`` treats each seed alone.
    ``like``: one seed's entry (arrays or ShapeDtypeStructs, or a function returning them); by default traced from
    ``compute`` on one seed. A function is called once, and only when an entry is there to read: a cold run skips
    tracing for shapes (0.1-0.7 s a stage on one core)."""
    if like is None:
        like = lambda: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),  # noqa: E731
                                    jax.eval_shape(compute, seed_ids[:1]))
    if callable(like):
        like = functools.cache(like)
    got = {int(s): store.load(kind, fields_of(int(s)), like) for s in seed_ids}
    missing = np.array([s for s in seed_ids if got[int(s)] is None], dtype=np.int32)
    if missing.size:
        started = time.perf_counter()
        batch = jax.device_get(compute(missing))
        timed = getattr(store, "timed", None)         # a duck-typed store may keep no account
        if timed is not None:
            with getattr(store, "lock", contextlib.nullcontext()):
                timed[kind] = timed.get(kind, 0.0) + time.perf_counter() - started
        for i, s in enumerate(missing):
            one = jax.tree.map(lambda x: x[i], batch)
            store.save(kind, fields_of(int(s)), one)
            got[int(s)] = one
    return jax.tree.map(lambda *xs: np.stack(xs), *[got[int(s)] for s in seed_ids])
