"""A content-addressed store for parameters and per-cell results, so sweeps resume and reuse fine-tunes.

An entry's key is a hash of exactly the fields that determine it (``fields``: plain JSON values), e.g. Psi_0 depends
on the seed and the model's shape and scale, a fine-tune adds the task and the SGD settings, an evaluation adds the
coefficient grid. Entries are ``.npz`` files (numpy, ``allow_pickle=False``: nothing executable is ever loaded)
written atomically, with the fields stored beside the arrays so a hit can be checked, and loading checks every
array's shape and dtype against what the caller expects.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import jax
import numpy as np

from tvtheory import results

# Bump when the meaning of a cached quantity changes, or when a code change alters the numbers computed (2: the
# (A X) V^T product order of model.apply; 3: the four-matrix form's grids through the quadratic expansion; 4: the
# four-matrix form's dW and dV norms in pair_eval are the change of the merged weights, model.merged_delta), so that
# entries from older code are never mixed with new ones.
VERSION = 4


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


class CacheMismatch(ValueError):
    """A cached entry does not have the shapes or dtypes the config implies."""


class Store:
    """Entries under ``root/<kind>/<key>.npz``. ``refresh=True`` ignores existing entries (and overwrites them)."""

    def __init__(self, root: str | Path, refresh: bool = False):
        self.root, self.refresh = Path(root), refresh
        self.hits, self.misses = 0, 0

    def path(self, kind: str, fields: dict) -> Path:
        return self.root / kind / f"{key(fields)}.npz"

    def load(self, kind: str, fields: dict, like):
        """The cached pytree with the structure of ``like`` (arrays or ShapeDtypeStructs), or None."""
        p = self.path(kind, fields)
        if self.refresh or not p.exists():
            self.misses += 1
            return None
        with np.load(p, allow_pickle=False) as z:
            stored = str(z["__fields__"])
            if stored != canonical(fields):
                raise CacheMismatch(f"{p}: stored fields {stored} differ from the requested ones (hash collision?)")
            leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
            out, problems = [], []
            for path, want in leaves:
                name = jax.tree_util.keystr(path)
                if name not in z:
                    problems.append(f"{name} missing")
                    continue
                got = z[name]
                if got.shape != tuple(want.shape) or got.dtype != np.dtype(want.dtype):
                    problems.append(f"{name}: stored {got.dtype}{list(got.shape)}, expected "
                                    f"{np.dtype(want.dtype)}{list(want.shape)}")
                out.append(got)
            if problems:
                raise CacheMismatch(f"{p} does not match the config: " + "; ".join(problems)
                                    + " (delete it or run with cache.refresh=true)")
        self.hits += 1
        return jax.tree_util.tree_unflatten(treedef, out)

    def save(self, kind: str, fields: dict, tree) -> Path:
        p = self.path(kind, fields)
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        arrays = {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}
        arrays["__fields__"] = np.array(canonical(fields))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with results.atomic_path(p) as tmp:
            tmp.write_bytes(buf.getvalue())
        return p


class NoStore(Store):
    """Computes everything and keeps nothing (library use without a cache directory)."""

    def __init__(self):
        super().__init__(Path("/nonexistent"), refresh=True)

    def save(self, kind, fields, tree):
        return None
