"""A server with two tools that read the file they are given: for per-tool
narrowing in manifests (a manifest can hold `peek` to a narrower `read` than
`read_file`, whatever either really opens)."""

from mcp.server.mcpserver import MCPServer
from stdio_fds import serve

app = MCPServer("scoped")


@app.tool(description="Reads a file.")
def read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


@app.tool(description="Reads the first line of a public file.")
def peek(path: str) -> str:
    with open(path) as f:
        return f.readline()


if __name__ == "__main__":
    serve(app)
