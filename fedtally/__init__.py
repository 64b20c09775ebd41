"""fedtally: privacy-preserving secure aggregation for federated analytics.

    import fedtally
    fed = fedtally.connect("wss://host:8765", identity="alice.key", federation="federation.json")
    fed.descriptive_stats(["age", "nihss"])
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from fedtally.version import software_version
from protocol.errors import (
    AuthenticationError,
    BudgetExhausted,
    ConfigurationError,
    DataError,
    DegenerateInput,
    FedtallyError,
    InternalError,
    ProtocolAbort,
    QueryError,
    RemoteProtocolError,
    ServiceUnavailable,
    ThresholdNotMet,
)

if TYPE_CHECKING:
    from fedtally.client import Federation, connect
    from fedtally.coverage import IncompleteAnswer, IncompleteAnswerError, NoiseDominates
    from fedtally.dp import DP
    from fedtally.local import local_federation
    from fedtally.results import Count, NoisyValue
    from fedtally.simulated import SimulatedFederation
    from protocol.commitment import ForgedTotal

#: imported on first use: a node or aggregator process (``python -m fedtally node serve``)
#: then never loads the researcher's side (scipy, statsmodels), seconds of start-up
_LAZY = {
    "ForgedTotal": "protocol.commitment",
    "Federation": "fedtally.client", "connect": "fedtally.client",
    "IncompleteAnswer": "fedtally.coverage", "IncompleteAnswerError": "fedtally.coverage",
    "NoiseDominates": "fedtally.coverage",
    "DP": "fedtally.dp",
    "local_federation": "fedtally.local",
    "Count": "fedtally.results", "NoisyValue": "fedtally.results",
    "SimulatedFederation": "fedtally.simulated",
}


#: submodules the README names as ``fedtally.<name>`` after a plain ``import fedtally``
_LAZY_MODULES = ("synthetic", "dp", "coverage", "results")


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return import_module(f"fedtally.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module 'fedtally' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_LAZY_MODULES})


__version__ = software_version()

__all__ = [
    "AuthenticationError",
    "BudgetExhausted",
    "Count",
    "IncompleteAnswer",
    "IncompleteAnswerError",
    "NoiseDominates",
    "DP",
    "NoisyValue",
    "SimulatedFederation",
    "ConfigurationError",
    "DataError",
    "DegenerateInput",
    "Federation",
    "FedtallyError",
    "ForgedTotal",
    "InternalError",
    "ProtocolAbort",
    "QueryError",
    "RemoteProtocolError",
    "ServiceUnavailable",
    "ThresholdNotMet",
    "connect",
    "local_federation",
]
