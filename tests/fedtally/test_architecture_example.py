"""The ten-line method in ARCHITECTURE.md works as written: one module of its own name
dropped into ``fedtally.methods``, registered by its decorator and granted its kind in
the nodes' table (the steps the page names), it answers on a simulated federation with
the pooled data's own coefficient of variation. It runs in a process of its own, and its
module in a temporary folder added to the package's path, so the registry of the test
process and the package's folder keep only the catalog."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from support import PROJECT_ROOT

#: the imports of the page's module fedtally/methods/coefficient_of_variation.py
IMPORTS = """
from __future__ import annotations
from collections.abc import Sequence
from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.registry import catalog_method
from fedtally.results import moments
"""

PRELUDE = """
import json
import pathlib
import sys
import tempfile
import numpy as np
import fedtally.methods
from stats.kinds import METHOD_KINDS
from fedtally.methods.registry import methods
from fedtally.simulated import SimulatedFederation
from fedtally.synthetic import stroke_model, three_hospitals
folder = tempfile.TemporaryDirectory()  # removed when the process ends
(pathlib.Path(folder.name) / "coefficient_of_variation.py").write_text(sys.argv[1])  # one file
fedtally.methods.__path__.append(folder.name)
METHOD_KINDS["coefficient_of_variation"] = ("moments",)  # the nodes' one-line entry
coefficient_of_variation = methods()["coefficient_of_variation"].function
"""

CHECK = """
data = three_hospitals(seed=2, scale=0.05)
fed = SimulatedFederation(data, stroke_model(), seed=1)
pooled = np.concatenate([frame["age"].dropna().to_numpy(float) for frame in data.values()])
print(json.dumps({"ours": coefficient_of_variation(fed, "age"),
                  "pooled": float(pooled.std(ddof=1) / pooled.mean()),
                  "registered": methods()["coefficient_of_variation"].kinds,
                  "module": coefficient_of_variation.__module__}))
"""


def _example() -> str:
    page = (PROJECT_ROOT / "ARCHITECTURE.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 1, "ARCHITECTURE.md should show one method"
    return blocks[0]


def test_the_example_method_answers_as_written() -> None:
    script = PRELUDE + CHECK
    out = subprocess.run([sys.executable, "-c", script, IMPORTS + _example()], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["registered"] == ["moments"]
    assert report["module"] == "fedtally.methods.coefficient_of_variation"
    assert abs(report["ours"] - report["pooled"]) <= 1e-12 * abs(report["pooled"])
