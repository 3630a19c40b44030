"""Not an MCP server: writes random bytes to stdout (with the odd newline), then
one valid JSON-RPC notification, then exits."""

import os
import sys

TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 else 4 << 20

out = sys.stdout.buffer
left = TOTAL
while left > 0:
    n = min(left, 65536)
    out.write(os.urandom(n))
    left -= n
out.write(b'\n{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n')
out.flush()
