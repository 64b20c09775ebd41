"""fedtally: privacy-preserving secure aggregation for federated analytics.

    import fedtally
    fed = fedtally.connect("wss://host:8765", identity="alice.key", federation="federation.json")
    fed.descriptive_stats(["age", "nihss"])
"""

from engine.errors import (
    AuthenticationError,
    ConfigurationError,
    DataError,
    FedtallyError,
    ProtocolAbort,
    QueryError,
    RemoteProtocolError,
    ServiceUnavailable,
    ThresholdNotMet,
)
from fedtally.client import Federation, connect
from fedtally.local import local_federation

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "DataError",
    "Federation",
    "FedtallyError",
    "ProtocolAbort",
    "QueryError",
    "RemoteProtocolError",
    "ServiceUnavailable",
    "ThresholdNotMet",
    "connect",
    "local_federation",
]
