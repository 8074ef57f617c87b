"""The health-status admin endpoint (who may call admin endpoints: `api.auth`).

- `GET /admin/health/status` — the Hybrid Health Monitor's report and the Bedrock support
  manager's status (JSON).
"""

from __future__ import annotations

import orjson

from hybridroute.api.http import Receive, Scope, Send, send_json
from hybridroute.runtime import Runtime

__all__ = ["health_status"]


async def health_status(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    body = runtime.monitor.report().as_dict()
    body["support"] = runtime.support.status().as_dict()
    await send_json(send, 200, orjson.dumps(body))
