"""A scripted MCP session with the official Python SDK, over stdio.

    SESSION_SERVER_CMD='["CMD", "ARG"...]' session.py [--env K=V]... [--call TOOL JSON_ARGS]...

The server command comes from the environment, not the command line: a
discovery rule matching the server's arguments must find the server, not
this client.

Initializes, lists the tools, calls each tool in order, and prints one JSON
object: {"server": name, "tools": [...], "calls": [{"tool", "is_error", "text"}]}.
Exits 1 when a call fails (unless --allow-errors).
"""

import argparse
import json
import os
import sys

import anyio
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--call", nargs=2, action="append", default=[], metavar=("TOOL", "JSON"))
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--cwd", default=None)
    p.add_argument("--allow-errors", action="store_true")
    p.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="offer the MCP roots capability naming DIR (repeatable)")
    a = p.parse_args()
    cmd = json.loads(os.environ.get("SESSION_SERVER_CMD", "[]"))
    if not cmd:
        p.error("SESSION_SERVER_CMD is not set")
    return a, cmd


def text_of(result):
    out = []
    for c in result.content or []:
        t = getattr(c, "text", None)
        if t is not None:
            out.append(t)
    return "\n".join(out)


async def run(a, cmd):
    env = dict(os.environ)
    env.pop("SESSION_SERVER_CMD", None)
    for kv in a.env:
        k, _, v = kv.partition("=")
        env[k] = v
    params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=env, cwd=a.cwd)
    report = {"tools": [], "calls": []}
    async with stdio_client(params) as (read, write):
        roots = None
        if a.root:
            async def roots(_ctx):
                return types.ListRootsResult(roots=[types.Root(uri=f"file://{d}") for d in a.root])
        async with ClientSession(read, write, list_roots_callback=roots) as session:
            init = await session.initialize()
            if a.root:
                # The server asks for the roots once initialized; let it
                # have them before the first call.
                await anyio.sleep(1.0)
            report["server"] = init.server_info.name
            tools = await session.list_tools()
            report["tools"] = sorted(t.name for t in tools.tools)
            for name, args in a.call:
                r = await session.call_tool(name, json.loads(args))
                report["calls"].append({"tool": name, "is_error": bool(r.is_error), "text": text_of(r)})
    return report


def main():
    a, cmd = parse()
    report = anyio.run(run, a, cmd)
    print(json.dumps(report))
    failed = [c for c in report["calls"] if c["is_error"]]
    if failed and not a.allow_errors:
        print(f"tool calls failed: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
