"""A `web_server` function on a fixed port, as vLLM's is: several replicas must coexist."""

import subprocess
import sys

import ember

app = ember.App("webserver")

# The user's own server, bound to every address as seed vLLM apps do: GET /hold?until=PATH
# answers once PATH exists, with the replica that served it.
SERVER = """
import asyncio, os
async def handle(reader, writer):
    request = (await reader.readuntil(b"\\r\\n\\r\\n")).decode()
    target = request.split()[1]
    if target.startswith("/hold?until="):
        while not os.path.exists(target.split("=", 1)[1]):
            await asyncio.sleep(0.05)
    body = os.environ["EMBER_REPLICA_ID"].encode()
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", 8000)
    await server.serve_forever()
asyncio.run(main())
"""


@app.function(max_containers=3, scaledown_window=60)
@ember.web_server(port=8000, startup_timeout=30)
def held() -> None:
    subprocess.Popen([sys.executable, "-c", SERVER])
