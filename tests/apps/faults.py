"""Faults user code causes: output that is not tidy lines, and processes of its own (the probe's
D1, D2 and D10)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


# A daemon: forks, its parent exits (so it is an orphan), then a session of its own. Started
# with an empty environment, so no EMBER_REPLICA_ID names it: only the replica's subreaper
# (it is reparented to the replica, below it in the tree) finds it.
DAEMON = """
import os, sys, time
if os.fork():
    os._exit(0)
os.setsid()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def _detach(folder: str, daemon: bool) -> dict[str, int]:
    """Start a child in a session of its own (it keeps the replica's environment), and a daemon
    if asked; each writes its pid to a file in `folder`. Returns their pids by name."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    child = f"{folder}/child"
    subprocess.Popen(
        ["sh", "-c", f"echo $$ > {child}.tmp && mv {child}.tmp {child} && exec sleep 600"],
        start_new_session=True,
    )
    if daemon:
        subprocess.run([sys.executable, "-c", DAEMON, f"{folder}/daemon"], env={}, check=True)
    names = ["child", "daemon"] if daemon else ["child"]
    while not all(Path(folder, name).exists() for name in names):
        time.sleep(0.01)
    return {name: int(Path(folder, name).read_text()) for name in names}


@app.function(scaledown_window=300)
def detach(folder: str) -> dict[str, int]:
    return _detach(folder, daemon=True)


@app.function(scaledown_window=1)
def detach_briefly(folder: str) -> dict[str, int]:
    """The same, on a replica that scales down a second after."""
    return _detach(folder, daemon=True)


@app.function(timeout=2, retries=0)
def detach_and_hang(folder: str) -> None:
    """Past its timeout, stuck: the replica is killed (SIGKILL after a short grace)."""
    _detach(folder, daemon=True)
    time.sleep(600)


@app.function(retries=0)
def detach_and_crash(folder: str) -> None:
    """The replica dies at once, its child in a session of its own left behind."""
    _detach(folder, daemon=False)
    os.kill(os.getpid(), signal.SIGKILL)
