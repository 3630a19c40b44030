"""A bare stdio MCP server (no SDK) that records every byte it reads and
writes, for the gate's tests: `recorder.py DIR [EXIT]` appends what it reads
to DIR/in and what it writes to DIR/out, and exits with EXIT at end of input.

Tools: `add` (adds a and b) and `rm` (would remove files: never approved in
the tests). Requests it does not know get an empty result; notifications get
nothing, except `notifications/echo`, answered by a server notification."""

import json
import os
import sys

DIR = sys.argv[1]
EXIT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
TOOLS = [
    {"name": "add", "description": "Adds two numbers.",
     "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}},
    {"name": "rm", "description": "Removes a file.",
     "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}}},
]

rec_in = open(os.path.join(DIR, "in"), "ab", buffering=0)
rec_out = open(os.path.join(DIR, "out"), "ab", buffering=0)
out = sys.stdout.buffer


def send(msg):
    line = json.dumps(msg).encode() + b"\n"
    rec_out.write(line)
    out.write(line)
    out.flush()


def answer(msg):
    method, mid = msg.get("method"), msg.get("id")
    if mid is None:
        if method == "notifications/echo":
            send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "echo"}})
        return None
    if method == "initialize":
        result = {"protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
                  "capabilities": {"tools": {"listChanged": True}},
                  "serverInfo": {"name": "recorder", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        args = msg["params"].get("arguments") or {}
        name = msg["params"]["name"]
        text = str(args.get("a", 0) + args.get("b", 0)) if name == "add" else f"called {name}"
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        result = {}
    return {"jsonrpc": "2.0", "id": mid, "result": result}


for line in sys.stdin.buffer:
    rec_in.write(line)
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    msgs = msg if isinstance(msg, list) else [msg]
    replies = [r for r in (answer(m) for m in msgs if isinstance(m, dict)) if r is not None]
    if isinstance(msg, list):
        if replies:
            send(replies)
    elif replies:
        send(replies[0])
sys.exit(EXIT)
