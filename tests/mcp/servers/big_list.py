"""A server whose tools/list response is about 200 KB (one JSON-RPC line)."""

from mcp.server.mcpserver import MCPServer
from stdio_fds import serve

app = MCPServer("big-list")
TOOLS = 160


def make(i: int):
    def tool(x: str) -> str:
        return f"{i}:{x}"

    return tool


for i in range(TOOLS):
    app.add_tool(
        make(i),
        name=f"tool_{i:03d}",
        description=f"Tool number {i}. " + ("It does one thing and does it well. " * 30),
    )

if __name__ == "__main__":
    serve(app)
