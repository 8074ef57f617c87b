"""The simulators' control plane: HTTP routes under `/_sim/` to read and turn the fault knobs.

GET               /_sim/knobs   current knobs
PUT|PATCH|POST    /_sim/knobs   partial update from a JSON object → 200 + new knobs, or 400
POST              /_sim/reset   knobs back to defaults, stats cleared
GET               /_sim/stats   request counts and recent requests
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hybridroute.simulators.knobs import Knobs
from hybridroute.simulators.stats import Stats

__all__ = ["control_routes", "json_response"]


def json_response(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def _error(message: str) -> Response:
    return json_response({"error": message}, status_code=400)


async def _read_changes(request: Request) -> dict[str, object]:
    try:
        changes = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(changes, dict):
        raise ValueError("request body must be a JSON object of knob names to values")
    return changes


def control_routes(knobs: Knobs, stats: Stats) -> list[Route]:
    """Routes that expose `knobs` and `stats` over HTTP."""

    async def get_knobs(request: Request) -> Response:
        return json_response(knobs.as_dict())

    async def change_knobs(request: Request) -> Response:
        try:
            knobs.update(await _read_changes(request))
        except ValueError as exc:
            return _error(str(exc))
        return json_response(knobs.as_dict())

    async def reset(request: Request) -> Response:
        knobs.reset()
        stats.clear()
        return json_response({"knobs": knobs.as_dict(), "stats": stats.as_dict()})

    async def get_stats(request: Request) -> Response:
        return json_response(stats.as_dict())

    return [
        Route("/_sim/knobs", get_knobs, methods=["GET"], name="sim_get_knobs"),
        Route("/_sim/knobs", change_knobs, methods=["PUT", "PATCH", "POST"], name="sim_set_knobs"),
        Route("/_sim/reset", reset, methods=["POST"], name="sim_reset"),
        Route("/_sim/stats", get_stats, methods=["GET"], name="sim_stats"),
    ]
