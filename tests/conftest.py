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
