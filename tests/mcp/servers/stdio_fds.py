"""Serve an SDK `MCPServer` on fds 0 and 1 themselves.

mcp 2.x's default `stdio_server()` moves the wire to private duplicates of fds
0 and 1 (>= 3) and points 0 at /dev/null and 1 at stderr. Servers written the
classic way (Node's SDK, mcp 1.x, most servers in the wild) read fd 0 and write
fd 1; these test servers do the same by handing the SDK explicit streams.
"""

import sys
from io import TextIOWrapper

import anyio
from mcp.server.stdio import stdio_server


def serve(app):
    async def main():
        stdin = anyio.wrap_file(TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"))
        stdout = anyio.wrap_file(TextIOWrapper(sys.stdout.buffer, encoding="utf-8"))
        async with stdio_server(stdin, stdout) as (read, write):
            low = app._lowlevel_server  # MCPServer has no public run over given streams
            await low.run(read, write, low.create_initialization_options())

    anyio.run(main)
