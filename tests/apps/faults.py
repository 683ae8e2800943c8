"""Faults user code causes: output that is not tidy lines, and processes of its own (the probe's
D1, D2 and D10)."""

import os
import subprocess
import sys
import time

import ember

app = ember.App("faults")

# Replicas without a sandbox share the host's ports: the test then picks a free one, and the
# replica learns it from its environment, as the module is imported there too.
PORT = int(os.environ.get("FAULTS_PORT", "8000"))

# The user's own server, a child of the replica: GET / answers with the replica that started it.
SERVER = """
import asyncio, os, sys
async def handle(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    body = os.environ["EMBER_REPLICA_ID"].encode()
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


@app.function(scaledown_window=120, timeout=60)
def noisy(updates: int) -> str:
    """A 10 MB line, a tqdm-style progress bar, and bytes that are not UTF-8; then an answer."""
    print("x" * 10_000_000)
    for i in range(updates):
        sys.stdout.write(f"\rdownloading {i:8d}/{updates} " + "#" * 40)
    sys.stdout.write("\n")
    sys.stdout.flush()
    sys.stdout.buffer.write(b"\xff\xfe garbage \x80\x00 end\n")
    sys.stdout.buffer.flush()
    return os.environ["EMBER_REPLICA_ID"]


@app.function(scaledown_window=300, secrets=[ember.Secret.from_dict({"FAULTS_PORT": str(PORT)})])
@ember.web_server(port=PORT, startup_timeout=30)
def served() -> None:
    subprocess.Popen([sys.executable, "-c", SERVER, str(PORT)])


@app.function(scaledown_window=300)
def stubborn(seconds: float) -> str:
    """Leaves a child behind that outlives the input, in a session of its own (as a daemon)."""
    subprocess.Popen(["sleep", "600"], start_new_session=True)
    time.sleep(seconds)
    return "ok"
