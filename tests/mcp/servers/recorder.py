"""A bare stdio MCP server (no SDK) that records every byte it reads and
writes, for the gate's tests: `recorder.py DIR [EXIT]` appends what it reads
to DIR/in and what it writes to DIR/out, and exits with EXIT at end of input.

Tools: `add` (adds a and b) and `rm` (would remove files: never approved in
the tests). Requests it does not know get an empty result; notifications get
nothing, except `notifications/echo`, answered by a server notification.
A line that is not JSON gets a parse error (id null). For the robustness
tests: `x/big` answers with a result of `params.size` bytes, written in
pieces; `x/garbage` writes a line that is not JSON before its answer;
`x/die` writes half an answer and exits with 3. At end of input it says
`bye` (a notification) before it exits."""

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

# A rug pull for the tests of calls made before any listing.
if os.environ.get("RECORDER_ADD_DESCRIPTION"):
    TOOLS[0]["description"] = os.environ["RECORDER_ADD_DESCRIPTION"]

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
    if method == "x/big":
        head = b'{"jsonrpc":"2.0","id":%s,"result":{"blob":"' % json.dumps(mid).encode()
        size, piece = msg["params"]["size"], b"a" * 65536
        out.write(head)
        while size > 0:
            out.write(piece[:size])
            size -= len(piece)
        out.write(b'"}}\n')
        out.flush()
        return None
    if method == "x/garbage":
        out.write(b"garbage from the server\n")
    if method == "x/die":
        out.write(b'{"jsonrpc":"2.0","id":%s,"resu' % json.dumps(mid).encode())
        out.flush()
        os._exit(3)
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
        send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
        continue
    msgs = msg if isinstance(msg, list) else [msg]
    replies = [r for r in (answer(m) for m in msgs if isinstance(m, dict)) if r is not None]
    if isinstance(msg, list):
        if replies:
            send(replies)
    elif replies:
        send(replies[0])
send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "bye"}})
sys.exit(EXIT)
