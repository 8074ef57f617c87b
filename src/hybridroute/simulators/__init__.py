"""Local upstream simulators: faithful stand-ins for the gateway's upstreams, with fault knobs.

- `knobs`: `Knobs` (latency, error injection, hang, outage, stream shape) and `ERROR_KINDS`.
- `stats`: `Stats`, per-simulator request counts and recent request records.
- `control`: `control_routes`, the `/_sim/knobs`, `/_sim/reset`, `/_sim/stats` HTTP endpoints.
- `answers`: `simulated_answer` and `count_tokens`, the deterministic echo "model".
- `eventstream`: AWS event-stream frame encoder (what botocore decodes for ConverseStream).
- `sigv4`: `verify_sigv4`, server-side SigV4 verification built on botocore's signer.
- `bedrock`: `create_bedrock_app`, a Bedrock Runtime Converse / ConverseStream simulator.
- `mcp_server`: `create_mcp_server` / `create_mcp_http_app`, an MCP server with a `generate`
  tool (stdio or streamable HTTP), runnable as `python -m hybridroute.simulators.mcp_server`.

Simulators are upstream peers: they import nothing from the gateway except `hybridroute.serving`.
"""
