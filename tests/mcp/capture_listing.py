"""Captures a stdio MCP server's whole `tools/list` answer, as the server wrote it.

    python capture_listing.py OUT.json -- CMD [ARGS...]

Writes `{"server": CMD..., "tools": [...]}` (every page, the tool objects as
JSON with their wire names): the corpus `tests/data/listings/` the poisoning
detector's thresholds are measured on (see the README's Lines and alerts).
"""

import json
import os
import sys

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


async def main(out, cmd):
    # The environment passes through (servers that want an API key to start).
    params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=dict(os.environ))
    tools = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            cursor = None
            while True:
                res = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
                tools.extend(t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in res.tools)
                cursor = res.next_cursor
                if not cursor:
                    break
    with open(out, "w") as f:
        json.dump({"tools": tools}, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    print(f"{out}: {len(tools)} tools")


if __name__ == "__main__":
    sep = sys.argv.index("--")
    anyio.run(main, sys.argv[1], sys.argv[sep + 1:])
