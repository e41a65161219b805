"""A real gRPC server (port 0, loopback) over a scripted engine, and a channel to it."""

import asyncio
import urllib.request

import grpc
import pytest_asyncio

from guard.pipeline import GuardConfig
from server.app import GuardServer, ServerOptions
from server.metrics import GuardMetrics
from tests.scripted_engine import ScriptedEngine


class ServerHandle:
    def __init__(self, server: GuardServer, channel: grpc.aio.Channel):
        self.server = server
        self.channel = channel
        self.engine = server.engine
        self.metrics = server.metrics


async def start_server(engine, config=None, **options) -> ServerHandle:
    opts = ServerOptions(host="127.0.0.1", port=0, metrics_port=0, health_check_interval_seconds=0.05, **options)
    server = GuardServer(engine, config or GuardConfig(), opts, GuardMetrics())
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return ServerHandle(server, channel)


async def stop_server(handle: ServerHandle) -> None:
    await handle.channel.close()
    await handle.server.stop(grace=1)


async def scrape_metrics(handle: ServerHandle) -> str:
    """The server's Prometheus exposition, fetched over HTTP off the event loop."""
    url = f"http://127.0.0.1:{handle.server.metrics_port}/metrics"
    return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())


@pytest_asyncio.fixture
async def scripted_server():
    engine = ScriptedEngine(paths=[" 7 + 5 = 12.\nAnswer: 12"], probe=lambda path, sub: "7")
    handle = await start_server(engine)
    yield handle
    await stop_server(handle)
