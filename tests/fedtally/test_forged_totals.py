"""A malicious aggregator forges totals, over real processes: the researcher's client refuses
the result (ForgedTotal), the aggregator's log shows the round it forged, and no result
object comes back. Without the check, forged first Newton totals made an honest client sign a
beta that isolates one patient (the aggregator issue's first attack)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fedtally
from fedtally.synthetic import stroke_model, three_hospitals
from tests.support import wait_until

#: the aggregator, patched to add to the first slot of every total it unmasks
FORGING_AGGREGATOR = """
import logging
import sys
from pathlib import Path

import numpy as np

from aggregator import service
from crypto.encoding import RingVector
from protocol.secagg_aggregator import SecAggAggregator


class Forging(SecAggAggregator):
    @property
    def result(self):
        return self.__dict__.get("_forged")

    @result.setter
    def result(self, total):
        if total is not None:
            values = [int(v) for v in total.to_signed()]
            values[0] += 1
            total = RingVector.from_ints(total.bits, np.array(values, dtype=object))
        self.__dict__["_forged"] = total


service.SecAggAggregator = Forging
logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
service.run_aggregator(Path(sys.argv[1]), port=int(sys.argv[2]))
"""


def test_a_forged_total_is_refused_by_the_researcher(tmp_path: Path) -> None:
    data = three_hospitals(seed=3, scale=0.05)
    with fedtally.local_federation(data, stroke_model(), workdir=tmp_path) as fed:
        honest = fed.count()
        rounds_before = (tmp_path / "aggregator.log").read_text().count("done over")
        processes = fed.local
        port = processes.aggregator_port
        processes.aggregator.terminate()
        processes.aggregator.wait(10)
        script = tmp_path / "forging_aggregator.py"
        script.write_text(FORGING_AGGREGATOR)
        log = (tmp_path / "aggregator.log").open("ab")
        forging = subprocess.Popen([sys.executable, str(script), str(tmp_path / "aggregator.json"),
                                    str(port)], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=Path(__file__).resolve().parents[2],
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
        processes.aggregator = forging
        try:
            answer = _once_nodes_are_back(fed, lambda: fed.count())
            pytest.fail(f"a forged total was accepted: {answer} (honest {honest})")
        except fedtally.ForgedTotal as exc:
            assert "altered" in str(exc)
        with pytest.raises(fedtally.ForgedTotal):
            fed.logistic_regression("death", ["age", "nihss"])
        # the forging aggregator ran the rounds (and logged them) whose totals it altered; it
        # may write the line just after the researcher has the total, so wait for it
        wait_until(lambda: (tmp_path / "aggregator.log").read_text().count("done over")
                   >= rounds_before + 2, "the forging aggregator did not log its rounds")


def _once_nodes_are_back(fed: fedtally.Federation, call, timeout: float = 60.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (fedtally.ServiceUnavailable, fedtally.ThresholdNotMet, fedtally.QueryError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
