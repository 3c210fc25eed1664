"""A real uvicorn server serving a test router, for driving the rpc package over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request

from rpc import RPC, Call, RPCError, checkpoint, rpc_routes, tracked


@dataclasses.dataclass(frozen=True)
class Context:
    context_id: int
    token: str | None
    user: str | None = None
    trail: tuple[str, ...] = ()


_context_ids = itertools.count(1)


async def create_context(request: Request) -> Context:
    # Tests ask for a failing context with this header.
    failure = request.headers.get("x-context-failure")
    if failure == "rpc-error":
        raise RPCError("TOO_MANY_REQUESTS", "Slow down")
    if failure == "crash":
        raise RuntimeError("redis://:hunter2@cache is down")
    authorization = request.headers.get("authorization", "")
    token = authorization.removeprefix("Bearer ") or None
    return Context(context_id=next(_context_ids), token=token)


rpc = RPC(Context)


# --- middlewares ---------------------------------------------------------------------


async def require_user(call: Call) -> Any:
    """Resolves the token to a user, or refuses the call."""
    if call.ctx.token is None:
        raise RPCError("UNAUTHORIZED", "Send Authorization: Bearer <token>")
    return await call.next(ctx=dataclasses.replace(call.ctx, user=f"user-of-{call.ctx.token}"))


async def require_scope(call: Call) -> Any:
    if call.meta.get("scope") != "things:write" or call.ctx.user != "user-of-admin":
        raise RPCError("FORBIDDEN", f"Needs scope {call.meta.get('scope')}")
    return await call.next()


def leave_mark(mark: str):
    async def middleware(call: Call) -> Any:
        return await call.next(ctx=dataclasses.replace(call.ctx, trail=(*call.ctx.trail, mark)))

    return middleware


# --- models --------------------------------------------------------------------------


class Subtract(BaseModel):
    minuend: int
    subtrahend: int


class Update(BaseModel):
    a: int
    b: int
    c: int
    d: int
    e: int


class Numbers(BaseModel):
    a: int = 0
    b: int = 0
    c: int = 0


class Hello(BaseModel):
    value: int


class Point(BaseModel):
    x: int
    y: int


class Stamped(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    created_at: str = Field(alias="createdAt")


class RaiseSpec(BaseModel):
    key: str
    message: str


class Whoami(BaseModel):
    user: str | None
    context_id: int
    trail: list[str]


# --- handlers ------------------------------------------------------------------------


async def subtract(ctx: Context, params: Subtract) -> int:
    """Subtract subtrahend from minuend."""
    return params.minuend - params.subtrahend


async def ignore(ctx: Context, params: Any) -> None:
    return None


async def add(ctx: Context, params: Numbers) -> int:
    return params.a + params.b + params.c


async def get_data(ctx: Context, params: None) -> list[Any]:
    return ["hello", 5]


async def whoami(ctx: Context, params: None) -> Whoami:
    return Whoami(user=ctx.user, context_id=ctx.context_id, trail=list(ctx.trail))


async def raise_rpc_error(ctx: Context, params: RaiseSpec) -> None:
    raise RPCError(params.key, params.message, data={"hint": "from the handler"})


async def explode(ctx: Context, params: None) -> None:
    raise RuntimeError("connection to postgres://admin:hunter2@db/secret failed")


async def wrong_shape(ctx: Context, params: None) -> dict[str, Any]:
    return {"x": "not a number"}


async def point_as_dict(ctx: Context, params: None) -> dict[str, Any]:
    return {"x": 1, "y": 2}


async def stamped(ctx: Context, params: None) -> Stamped:
    return Stamped(created_at="2024-01-01T00:00:00Z")


async def echo_point(ctx: Context, params: Point) -> Point:
    return params


class Ticks(BaseModel):
    count: int = Field(ge=0)
    lastEventId: str | None = None  # filled from Last-Event-ID when a client reconnects


class Tick(BaseModel):
    n: int


class Blob(BaseModel):
    text: str


class StreamProbe:
    """What the long-lived subscriptions did: how many events they produced, and whether they were closed."""

    def __init__(self) -> None:
        self.produced = 0
        self.opened = 0
        self.closed = 0
        self.set_up = 0
        self.hoses_closed = 0


class SetUp(BaseModel):
    fail: bool = False


PROBE = StreamProbe()


async def ticks(ctx: Context, params: Ticks):
    """Counts to `count`, each number a resumable event; resumes after `lastEventId`."""
    start = int(params.lastEventId) + 1 if params.lastEventId else 1
    for n in range(start, params.count + 1):
        yield tracked(str(n), Tick(n=n))


async def one_then_wait(ctx: Context, params: None):
    """One event, then nothing until the stream is closed."""
    PROBE.opened += 1
    try:
        yield Tick(n=1)
        await asyncio.Event().wait()
    finally:
        PROBE.closed += 1


async def firehose(ctx: Context, params: None):
    """64 KiB events as fast as the stream takes them."""
    text = "x" * 65536
    try:
        while True:
            PROBE.produced += 1
            yield Blob(text=text)
    finally:
        PROBE.hoses_closed += 1


async def set_up_first(ctx: Context, params: SetUp):
    """Sets up before the stream opens (an async function returning the iterator); refuses when asked to."""
    if params.fail:
        raise RPCError("NOT_FOUND", "Nothing to follow")
    PROBE.set_up += 1

    async def events():
        yield Tick(n=PROBE.set_up)

    return events()


async def checkpointed(ctx: Context, params: None):
    """A place to resume from first, then one tracked event."""
    yield checkpoint("7")
    yield tracked("8", Tick(n=8))


async def fail_after_one(ctx: Context, params: None):
    yield Tick(n=1)
    raise RPCError("PRECONDITION_FAILED", "The thing went away")


async def crash_after_one(ctx: Context, params: None):
    yield Tick(n=1)
    raise RuntimeError("postgres://admin:hunter2@db is gone")


async def wrong_event(ctx: Context, params: None):
    yield {"n": "not a number"}


async def whoami_stream(ctx: Context, params: None):
    yield Whoami(user=ctx.user, context_id=ctx.context_id, trail=list(ctx.trail))


authed = rpc.procedure.use(require_user)

router = rpc.router(
    # The JSON-RPC 2.0 specification's examples.
    subtract=rpc.procedure.input(Subtract).output(int).query(subtract),
    update=rpc.procedure.input(Update).mutation(ignore),
    sum=rpc.procedure.input(Numbers).output(int).query(add),
    notify_hello=rpc.procedure.input(Hello).mutation(ignore),
    notify_sum=rpc.procedure.input(Numbers).mutation(ignore),
    get_data=rpc.procedure.output(list[str | int]).query(get_data),
    # The toolkit's own behaviour.
    whoami=authed.use(leave_mark("first")).use(leave_mark("second")).output(Whoami).query(whoami),
    anonymous=rpc.procedure.output(Whoami).query(whoami),
    scoped=authed.meta(scope="things:write").use(require_scope).output(Whoami).mutation(whoami),
    raise_error=rpc.procedure.input(RaiseSpec).query(raise_rpc_error),
    explode=rpc.procedure.query(explode),
    wrong_shape=rpc.procedure.output(Point).query(wrong_shape),
    point_as_dict=rpc.procedure.output(Point).query(point_as_dict),
    stamped=rpc.procedure.output(Stamped).query(stamped),
    geometry=rpc.router(shapes=rpc.router(echo=rpc.procedure.input(Point).output(Point).query(echo_point))),
    # Subscriptions.
    ticks=rpc.procedure.input(Ticks).output(Tick).subscription(ticks),
    one_then_wait=rpc.procedure.output(Tick).subscription(one_then_wait),
    firehose=rpc.procedure.output(Blob).subscription(firehose),
    fail_after_one=rpc.procedure.output(Tick).subscription(fail_after_one),
    checkpointed=rpc.procedure.output(Tick).subscription(checkpointed),
    set_up_first=rpc.procedure.input(SetUp).output(Tick).subscription(set_up_first),
    crash_after_one=rpc.procedure.output(Tick).subscription(crash_after_one),
    wrong_event=rpc.procedure.output(Tick).subscription(wrong_event),
    whoami_stream=authed.use(leave_mark("first")).output(Whoami).subscription(whoami_stream),
)

OPENRPC_INFO = {"title": "rpc test service", "version": "1.0.0"}


# What the endpoint's observer was told, (method, error key, seconds) per call, in order.
OBSERVED_CALLS: list[tuple[str | None, str | None, float]] = []


def observe_call(method: str | None, error: str | None, seconds: float) -> None:
    OBSERVED_CALLS.append((method, error, seconds))


# Short, so a test sees heartbeats without waiting the default 15 s, and a stalled reader dropped without
# waiting a minute.
HEARTBEAT_SECONDS = 0.2
SEND_TIMEOUT_SECONDS = 3.0


def build_app() -> Starlette:
    return Starlette(
        routes=rpc_routes(
            router,
            create_context,
            openrpc_info=OPENRPC_INFO,
            observe=observe_call,
            heartbeat_seconds=HEARTBEAT_SECONDS,
            send_timeout_seconds=SEND_TIMEOUT_SECONDS,
        )
    )


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The base URL of a real uvicorn server, on a free 127.0.0.1 port, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # binding first: no race for a "free" port
    port = sock.getsockname()[1]
    # log_config=None leaves logging alone, so caplog sees the server's records.
    config = uvicorn.Config(build_app(), lifespan="off", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture()
def client(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=10) as client:
        yield client


@pytest.fixture()
def post_rpc(client: httpx.Client):
    """POST a raw body (str) or a JSON value to /rpc and return the response."""

    def post(body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        content = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return client.post("/rpc", content=content, headers={"content-type": "application/json", **(headers or {})})

    return post


@pytest.fixture()
def call(post_rpc):
    """Call one method with id 1; the parsed reply."""

    def call_method(method: str, params: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            request["params"] = params
        response = post_rpc(request, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    return call_method


@pytest.fixture()
def observed() -> list[tuple[str | None, str | None, float]]:
    """The calls the endpoint's observer is told of from now on (the server is shared: tests run one at a time)."""
    OBSERVED_CALLS.clear()
    return OBSERVED_CALLS


@pytest.fixture()
def probe() -> StreamProbe:
    """What the long-lived test subscriptions of the shared server have done so far."""
    return PROBE
