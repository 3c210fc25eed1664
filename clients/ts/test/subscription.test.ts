// subscribe() without a server: a fetch that plays scripted responses, to check what ends a subscription,
// what reopens it, and what a reopened connection sends. `node --test subscription.test.js`
// (tests/ts/test_ts_node_tests.py runs it); live.ts follows the real service.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createClient, RpcError, type ConnectionState } from "../src/client.js";

const encoder = new TextEncoder();

interface Sent {
  headers: Record<string, string>;
  body: { jsonrpc: string; id: number; method: string; params: unknown };
  signal: AbortSignal;
}

type Reply = Response | Error | ((signal: AbortSignal) => Response);

function stream(...chunks: string[]): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream; charset=utf-8" } });
}

/** A stream that stays open until the request is aborted. */
function openStream(...chunks: string[]): (signal: AbortSignal) => Response {
  return (signal) => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
        signal.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  };
}

const OPEN = ": stream open\n\n";
const event = (id: string, result: unknown) =>
  `id: ${id}\ndata: ${JSON.stringify({ jsonrpc: "2.0", method: "batchExport.onChange", params: { subscription: 1, result } })}\n\n`;
const errorEvent = (code: string, numeric = -32603) =>
  `event: error\ndata: ${JSON.stringify({ jsonrpc: "2.0", error: { code: numeric, message: `${code} happened`, data: { code, httpStatus: 500, path: "batchExport.onChange" } }, id: 1 })}\n\n`;
const RETURN = `event: return\ndata: {"jsonrpc":"2.0","result":null,"id":1}\n\n`;

interface Run {
  sent: Sent[];
  data: [unknown, string | null][];
  states: ConnectionState[];
  started: (string | null)[];
  end: "complete" | "error" | "stopped";
  error: RpcError | null;
}

/** Subscribes through a client whose fetch answers with `replies` in turn; resolves when the subscription ends. */
function subscribeTo(replies: Reply[], options: { lastEventId?: string; stopAfter?: number } = {}): Promise<Run> {
  const sent: Sent[] = [];
  return new Promise((resolve, reject) => {
    const run: Run = { sent, data: [], states: [], started: [], end: "stopped", error: null };
    const client = createClient({
      url: "http://server.test/rpc",
      token: async () => "secret",
      fetch: async (_url, init) => {
        const signal = init.signal!;
        sent.push({ headers: init.headers as Record<string, string>, body: JSON.parse(init.body as string), signal });
        const reply = replies.shift();
        if (reply === undefined) {
          const tooMany = new Error("the subscription asked for one connection too many");
          reject(tooMany);
          throw tooMany;
        }
        if (reply instanceof Error) throw reply;
        return typeof reply === "function" ? reply(signal) : reply;
      },
    });
    const subscription = client.batchExport.onChange.subscribe(
      { projectId: "p" },
      {
        lastEventId: options.lastEventId ?? null,
        reconnect: { minDelayMs: 0, maxDelayMs: 0 },
        onData(value, id) {
          run.data.push([value, id]);
          if (run.data.length === options.stopAfter) subscription.unsubscribe();
        },
        onStarted: ({ lastEventId }) => run.started.push(lastEventId),
        onConnectionStateChange: (state) => run.states.push(state),
        onComplete: () => resolve({ ...run, end: "complete" }),
        onError: (error) => resolve({ ...run, end: "error", error }),
        onStopped: () => resolve({ ...run, end: "stopped" }),
      },
    );
  });
}

const reasons = (run: Run) => run.states.map((s) => (s.state === "reconnecting" ? `reconnecting:${s.reason}` : s.state));

describe("subscribe", () => {
  it("POSTs one JSON-RPC request asking for an event stream, with the token", async () => {
    const run = await subscribeTo([stream(OPEN, RETURN)]);
    const [request] = run.sent;
    assert.equal(request!.headers.accept, "text/event-stream");
    assert.equal(request!.headers.authorization, "Bearer secret");
    assert.equal(request!.headers["last-event-id"], undefined);
    assert.deepEqual(request!.body, { jsonrpc: "2.0", id: 1, method: "batchExport.onChange", params: { projectId: "p" } });
    assert.equal(run.end, "complete");
  });

  it("reopens a stream that ends without a final event, resuming after the last id", async () => {
    const run = await subscribeTo([
      stream(OPEN, event("4", { n: 1 }), event("5", { n: 2 })),
      stream(OPEN, event("6", { n: 3 }), RETURN),
    ]);
    assert.deepEqual(run.data, [[{ n: 1 }, "4"], [{ n: 2 }, "5"], [{ n: 3 }, "6"]]);
    assert.equal(run.sent[1]!.headers["last-event-id"], "5");
    assert.deepEqual(run.started, [null, "5"]);
    assert.deepEqual(reasons(run), ["connecting", "open", "reconnecting:dropped", "open"]);
    assert.equal(run.end, "complete");
  });

  it("resumes after a checkpoint (an id line alone) even when no event came before the stream dropped", async () => {
    const run = await subscribeTo([stream(OPEN, "id: 9\n\n"), stream(OPEN, event("10", { n: 1 }), RETURN)]);
    assert.equal(run.sent[1]!.headers["last-event-id"], "9");
    assert.deepEqual(run.data, [[{ n: 1 }, "10"]]);
  });

  it("starts from the lastEventId it is given", async () => {
    const run = await subscribeTo([stream(OPEN, RETURN)], { lastEventId: "17" });
    assert.equal(run.sent[0]!.headers["last-event-id"], "17");
    assert.deepEqual(run.started, ["17"]);
  });

  for (const code of ["UNAUTHORIZED", "FORBIDDEN", "BAD_REQUEST", "NOT_FOUND", "PRECONDITION_FAILED"]) {
    it(`stops at ${code} and reports it, without reconnecting`, async () => {
      const run = await subscribeTo([stream(OPEN, event("1", { n: 1 }), errorEvent(code, -32003))]);
      assert.equal(run.end, "error");
      assert.ok(run.error instanceof RpcError);
      assert.equal(run.error.data.code, code);
      assert.equal(run.error.code, -32003);
      assert.equal(run.error.message, `${code} happened`);
      assert.equal(run.sent.length, 1);
      assert.deepEqual(run.data, [[{ n: 1 }, "1"]]);
    });
  }

  for (const code of ["INTERNAL_SERVER_ERROR", "TOO_MANY_REQUESTS"]) {
    it(`reconnects after ${code}, still resuming after the last id it saw`, async () => {
      const run = await subscribeTo([
        stream(OPEN, event("8", { n: 1 }), errorEvent(code)),
        stream(OPEN, errorEvent(code)), // no id on this stream: the resume point is kept
        stream(OPEN, RETURN),
      ]);
      assert.deepEqual(run.sent.map((s) => s.headers["last-event-id"]), [undefined, "8", "8"]);
      assert.deepEqual(reasons(run), ["connecting", "open", "reconnecting:refused", "open", "reconnecting:refused", "open"]);
      const failures = run.states.flatMap((s) => (s.state === "reconnecting" ? [s] : []));
      assert.deepEqual(failures.map((s) => [(s.error as RpcError).data.code, s.attempt]), [[code, 1], [code, 2]]);
      assert.equal(run.end, "complete");
    });
  }

  it("reconnects when the server cannot be reached or answers with an HTTP error", async () => {
    const run = await subscribeTo([
      new TypeError("fetch failed"),
      new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }),
      stream(OPEN, RETURN),
    ]);
    const failures = run.states.flatMap((s) => (s.state === "reconnecting" ? [s] : []));
    assert.deepEqual(failures.map((s) => [s.reason, s.error.message]), [
      ["unreachable", "fetch failed"],
      ["unreachable", "HTTP 502 Bad Gateway"],
    ]);
    assert.equal((failures[1]!.error as RpcError).data.httpStatus, 502);
    assert.equal(run.end, "complete");
  });

  it("stops at a JSON-RPC refusal sent as plain JSON (a server without subscriptions)", async () => {
    const reply = { jsonrpc: "2.0", id: 1, error: { code: -32601, message: "Method not found", data: { code: "NOT_FOUND", httpStatus: 404, path: null } } };
    const run = await subscribeTo([new Response(JSON.stringify(reply), { headers: { "content-type": "application/json" } })]);
    assert.equal(run.end, "error");
    assert.equal(run.error!.data.code, "NOT_FOUND");
  });

  it("waits what the server's retry field says before reconnecting", async () => {
    const states: ConnectionState[] = [];
    await new Promise<void>((resolve) => {
      const replies = [stream("retry: 40\n", OPEN), stream(OPEN, RETURN)];
      const client = createClient({ url: "http://server.test/rpc", fetch: async () => replies.shift()! });
      client.batchExport.onChange.subscribe(
        { projectId: "p" },
        { onData() {}, reconnect: { minDelayMs: 60_000 }, onConnectionStateChange: (s) => states.push(s), onComplete: resolve },
      );
    });
    const reconnecting = states.find((s) => s.state === "reconnecting");
    assert.ok(reconnecting && reconnecting.state === "reconnecting");
    assert.ok(reconnecting.delayMs >= 40 && reconnecting.delayMs <= 50, `waited ${reconnecting.delayMs} ms`);
  });

  it("unsubscribing ends the connection and calls onStopped, and nothing after it", async () => {
    const run = await subscribeTo([openStream(OPEN, event("1", { n: 1 }), event("2", { n: 2 }), event("3", { n: 3 }))], { stopAfter: 1 });
    assert.equal(run.end, "stopped");
    assert.deepEqual(run.data, [[{ n: 1 }, "1"]]); // the events after it in the same chunk are not handed on
    assert.equal(run.sent.length, 1);
    assert.equal(run.sent[0]!.signal.aborted, true);
  });

  it("an aborted signal unsubscribes", async () => {
    const controller = new AbortController();
    const stopped = new Promise<string[]>((resolve) => {
      const seen: string[] = [];
      const client = createClient({
        url: "http://server.test/rpc",
        fetch: async (_url, init) => openStream(OPEN, event("1", { n: 1 }))(init.signal!),
      });
      client.batchExport.onChange.subscribe(
        { projectId: "p" },
        {
          signal: controller.signal,
          onData: () => {
            seen.push("data");
            controller.abort();
          },
          onStopped: () => resolve([...seen, "stopped"]),
          onError: () => resolve([...seen, "error"]),
        },
      );
    });
    assert.deepEqual(await stopped, ["data", "stopped"]);
  });
});
