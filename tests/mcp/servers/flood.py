"""Writes `notifications/tools/list_changed` lines of LINE bytes to stdout at
RATE bytes/s (0: as fast as it can) until TOTAL bytes, WRITE bytes per write.
Measures what the stdio capture sustains: every line that reaches the agent
whole becomes one `mcp_list_changed` event.

    python flood.py RATE TOTAL [LINE] [WRITE]
"""

import sys
import time

rate = int(sys.argv[1])
total = int(sys.argv[2])
size = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
write = int(sys.argv[4]) if len(sys.argv) > 4 else 64 * 1024

head = b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"pad":"'
tail = b'"}}}\n'
line = head + b"x" * (size - len(head) - len(tail)) + tail
per_write = max(1, write // size)
block = line * per_write

out = sys.stdout.buffer
sent = 0
start = time.monotonic()
while sent < total:
    out.write(block)
    out.flush()
    sent += len(block)
    if rate:
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
elapsed = time.monotonic() - start
print(f"{sent // size} {elapsed:.3f}", file=sys.stderr)
