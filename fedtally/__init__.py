"""fedtally: privacy-preserving secure aggregation for federated analytics.

    import fedtally
    fed = fedtally.connect("wss://host:8765", identity="alice.key", federation="federation.json")
    fed.descriptive_stats(["age", "nihss"])
"""

from engine.commitment import ForgedTotal
from engine.errors import (
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
from fedtally.client import Federation, connect
from fedtally.coverage import IncompleteAnswer, IncompleteAnswerError, NoiseDominates
from fedtally.dp import DP
from fedtally.local import local_federation
from fedtally.results import Count, NoisyValue
from fedtally.simulated import SimulatedFederation
from fedtally.version import software_version

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
