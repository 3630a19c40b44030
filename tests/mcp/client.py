"""MCP client for the integration tests, on the official Python SDK.

    python client.py PLAN -- CMD [ARGS...]

Starts CMD as a stdio MCP server (`mcp.client.stdio.stdio_client`), opens a
`ClientSession`, and runs PLAN, a JSON list of steps:

    ["list"]                      tools/list
    ["call", TOOL, {ARGS}]        tools/call
    ["sleep", SECONDS]

It prints one JSON line per step with the JSON-RPC id the SDK put on the wire
(read from the outgoing message), so a test can check the agent's `call_id`
against what the client really sent.
"""

import json
import sys

import anyio
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.client.stdio import StdioServerParameters, stdio_client


class RecordingStream:
    """The session's write stream, recording the id of each outgoing request."""

    def __init__(self, inner):
        self._inner = inner
        self.sent = []

    async def send(self, item):
        msg = getattr(item, "message", None)
        method = getattr(msg, "method", None)
        if method is not None and getattr(msg, "id", None) is not None:
            self.sent.append((method, msg.id))
        await self._inner.send(item)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def __aenter__(self):
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc):
        return await self._inner.__aexit__(*exc)


def last_id(stream, method):
    for m, i in reversed(stream.sent):
        if m == method:
            return i
    return None


async def main(plan, cmd):
    params = StdioServerParameters(command=cmd[0], args=cmd[1:])
    async with stdio_client(params) as (read, write):
        write = RecordingStream(write)
        async with ClientSession(read, write) as session:
            await session.initialize()
            for step in plan:
                if step[0] == "list":
                    res = await session.list_tools()
                    out = {"step": "list", "id": last_id(write, "tools/list"),
                           "tools": [{"name": t.name, "description": t.description} for t in res.tools]}
                elif step[0] == "call":
                    try:
                        res = await session.call_tool(step[1], step[2] if len(step) > 2 else {})
                    except MCPError as e:
                        # A JSON-RPC error (the gate refusing a call, for one).
                        out = {"step": "call", "tool": step[1], "id": last_id(write, "tools/call"),
                               "error": {"code": e.error.code, "message": e.error.message}}
                        print(json.dumps(out), flush=True)
                        continue
                    text = [c.text for c in res.content if getattr(c, "text", None) is not None]
                    out = {"step": "call", "tool": step[1], "id": last_id(write, "tools/call"),
                           "is_error": bool(res.is_error), "text": text}
                elif step[0] == "sleep":
                    await anyio.sleep(step[1])
                    out = {"step": "sleep"}
                else:
                    raise SystemExit(f"unknown step {step!r}")
                print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    anyio.run(main, json.loads(sys.argv[1]), sys.argv[3:])
