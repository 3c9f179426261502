"""What XLA compiled during a run: programs, seconds, and how many came from the persistent cache.

``Counter`` listens to JAX's compile events (``jax.monitoring``) from the moment it is started until it is stopped
(a launcher that runs several jobs in one process starts one per job); ``report()`` gives a plain dict for
provenance.json. Each backend compilation is counted under the function it compiled; a program read
back from the persistent cache (``.cache/tvtheory/xla``) counts as a hit, its seconds being the time to read it.
Tracing and lowering to StableHLO, which precede every compilation and cache lookup, are counted apart.
"""

from __future__ import annotations

import collections
import threading

BACKEND = "/jax/core/compile/backend_compile_duration"
TRACE = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")
HIT = "/jax/compilation_cache/cache_hits"


class Counter:
    def __init__(self) -> None:
        self.by_function: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])
        self.hits = 0
        self.trace_seconds = 0.0
        self._lock = threading.Lock()
        self._on = False

    def start(self) -> "Counter":
        from jax import monitoring

        if not self._on:
            monitoring.register_event_duration_secs_listener(self._duration)
            monitoring.register_event_listener(self._event)
            self._on = True
        return self

    def stop(self) -> None:
        from jax import monitoring

        if self._on:
            monitoring.unregister_event_duration_listener(self._duration)
            monitoring.unregister_event_listener(self._event)
            self._on = False

    def _duration(self, event: str, seconds: float, **kw) -> None:
        if event == BACKEND:
            with self._lock:
                row = self.by_function[str(kw.get("fun_name", "?"))]
                row[0] += 1
                row[1] += seconds
        elif event in TRACE:
            with self._lock:
                self.trace_seconds += seconds

    def _event(self, event: str, **kw) -> None:
        if event == HIT:
            with self._lock:
                self.hits += 1

    def report(self) -> dict:
        with self._lock:
            rows = sorted(self.by_function.items(), key=lambda kv: -kv[1][1])
            return {
                "programs": sum(r[0] for _, r in rows),
                "seconds": round(sum(r[1] for _, r in rows), 2),
                "persistent_cache_hits": self.hits,
                "trace_seconds": round(self.trace_seconds, 2),
                "by_function": {k: [n, round(s, 2)] for k, (n, s) in rows},
            }
