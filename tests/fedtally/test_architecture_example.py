"""The ten-line method in ARCHITECTURE.md works as written: registered by its decorator and
granted its kind in the nodes' table (the two steps the page names), it answers on a
simulated federation with the pooled data's own coefficient of variation. It runs in a
process of its own, so the registry of the test process keeps only the catalog."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from support import PROJECT_ROOT

PRELUDE = """
import json
from collections.abc import Sequence
import numpy as np
from stats.kinds import METHOD_KINDS
from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.registry import catalog_method, methods
from fedtally.results import moments
from fedtally.simulated import SimulatedFederation
from fedtally.synthetic import stroke_model, three_hospitals
METHOD_KINDS["coefficient_of_variation"] = ("moments",)  # step 2 of the page
"""

CHECK = """
data = three_hospitals(seed=2, scale=0.05)
fed = SimulatedFederation(data, stroke_model(), seed=1)
pooled = np.concatenate([frame["age"].dropna().to_numpy(float) for frame in data.values()])
print(json.dumps({"ours": coefficient_of_variation(fed, "age"),
                  "pooled": float(pooled.std(ddof=1) / pooled.mean()),
                  "registered": methods()["coefficient_of_variation"].kinds}))
"""


def _example() -> str:
    page = (PROJECT_ROOT / "ARCHITECTURE.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 1, "ARCHITECTURE.md should show one method"
    return blocks[0]


def test_the_example_method_answers_as_written() -> None:
    script = PRELUDE + _example() + CHECK
    out = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["registered"] == ["moments"]
    assert abs(report["ours"] - report["pooled"]) <= 1e-12 * abs(report["pooled"])
