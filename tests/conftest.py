import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from hypothesis import settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

# JAX compiles on first call: wall-clock deadlines would measure the compiler, not the property.
settings.register_profile("tvtheory", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("tvtheory")

# A scheduling hint, not a test selection: `make test` runs two workers that take whole files in collection order
# (`--dist loadfile --no-loadscope-reorder`), so the files of end-to-end runs go first, longest first, and the many
# short files fill in behind them. A file missing here only runs later.
LONGEST_FIRST = ("test_experiments.py", "test_reliability.py", "test_digits.py", "test_bench.py", "test_data.py",
                 "test_sweep.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))        # stable: each file keeps its order
