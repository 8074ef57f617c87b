"""Orchestration: the gateway service and the executor that carries decisions out.

Nothing here speaks HTTP; the API layer parses requests and renders what this returns.
"""

from hybridroute.gateway.executor import Executor, ExecutorSettings, Served
from hybridroute.gateway.service import Gateway
from hybridroute.gateway.streams import OpenStream
from hybridroute.types import Attempt

__all__ = ["Attempt", "Executor", "ExecutorSettings", "Gateway", "OpenStream", "Served"]
