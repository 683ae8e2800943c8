"""A trivial upstream for `bench/gateway.py`: a web_server on a fixed port, so it can be measured
directly and through the gateway in the same run."""

import threading

import ember

app = ember.App("bench-gateway")
PORT = 18901


@app.function(scaledown_window=600)
@ember.concurrent(max_inputs=64)
@ember.web_server(port=PORT, startup_timeout=30)
def upstream() -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def small(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("ok")

    async def sse(request):  # type: ignore[no-untyped-def]
        count = int(request.query_params.get("n", "1000"))

        async def events():  # type: ignore[no-untyped-def]
            for i in range(count):
                yield f"data: token {i}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    web = Starlette(routes=[Route("/small", small), Route("/sse", sse)])
    server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=PORT, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
