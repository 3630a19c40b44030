"""A server whose tools leak credentials in their results (all fake): the
secret scanning of the gate and of the kernel capture is tested on it.

Tools: `show_config` returns a deploy configuration holding a private key and
an AWS key pair; `dump_env` returns the server's own environment as NAME=value
lines (issue 18: a tool that dumps its environment makes no syscall the kernel
could judge), which holds the GitHub token the server was configured with;
`echo` returns its text."""

import os

from mcp.server.mcpserver import MCPServer
from stdio_fds import serve

# Built from parts so no scanner takes this file for a leak.
BODY = "MIIEowIBAAKCAQEAouHgxzNNAL5wIScGebcy8F5n3/YNBDRzrZSgqbjG3uhkWKFLf6xuI5aHUQPFeNBT"
KEY = "-----BEGIN RSA " + "PRIVATE KEY-----\n" + BODY + "\n" + BODY + "\n-----END RSA " + "PRIVATE KEY-----\n"
AWS_ID = "AKIA" + "Q3EGT7SXYZ2ABCDE"
AWS_SECRET = "PtYgjmUhBel31iEl2hp" + "ChYgCfrL1spNxnyVmihA+"
# As a host would configure the server (the client passes no environment).
os.environ["GITHUB_TOKEN"] = "ghp_" + "1LlqsajAIxNKu8iS2G8NPRVdD53X83RZJzzz"

app = MCPServer("leaky")


@app.tool(description="Shows the deployment configuration.")
def show_config() -> str:
    return f"deploy key:\n{KEY}aws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\nregion = eu-west-1\n"


@app.tool(description="Shows the server's environment.")
def dump_env() -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(os.environ.items()))


@app.tool(description="Returns its text.")
def echo(text: str) -> str:
    return text


if __name__ == "__main__":
    serve(app)
