// Drives the compiled client against a running server; tests/ts/test_ts_live_client.py and
// test_ts_live_subscription.py start one.
//   node build/test/live.js <scenario>   with RPC_URL, TOKEN and PROJECT_ID in the environment
//   (STREAM_URL: where subscriptions connect, when not RPC_URL; OTHER_TOKEN: a second user's token)
// Prints one JSON line per step it wants the caller to see, and waits for a line on stdin where the
// caller must act first (commit a change, cut the connection); any failed assertion exits non-zero.
import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import {
  createClient,
  RpcError,
  type BatchExport,
  type Client,
  type ConnectionState,
  type CreateBatchExport,
  type SubscribeOptions,
  type WatchBatchExports,
} from "../src/client.js";

const url = required("RPC_URL");
const token = required("TOKEN");
const projectId = required("PROJECT_ID");
const client = createClient({ url, token });

const traces: CreateBatchExport = {
  projectId,
  name: "traces from the TypeScript client",
  format: "JSONL",
  query: { tableName: "traces", filter: null, orderBy: { column: "timestamp", order: "DESC" } },
};

const scenarios: Record<string, () => Promise<void>> = {
  // create → all → downloadUrl once the worker completed it → cancel another one.
  async flow() {
    const created = await client.batchExport.create(traces);
    assert.equal(created.status, "QUEUED");
    assert.equal(created.query.tableName, "traces");
    assert.ok(!Number.isNaN(Date.parse(created.createdAt)), "createdAt is an ISO datetime");
    report({ created: created.id }); // the test runs the job now

    const completed = await waitFor(created.id, "COMPLETED");
    assert.equal(completed.isDownloadable, true);
    const link = await client.batchExport.downloadUrl({ projectId, batchExportId: created.id });
    assert.ok(Date.parse(link.expiresAt) > Date.now(), "the link expires in the future");
    const file = await fetch(link.url);
    assert.equal(file.status, 200);
    const lines = (await file.text()).split("\n").filter(Boolean);

    const second = await client.batchExport.create({ ...traces, name: "to be cancelled", format: "CSV" });
    const cancelled = await client.batchExport.cancel({ projectId, batchExportId: second.id });
    assert.equal(cancelled.status, "CANCELLED");

    const list = await client.batchExport.all({ projectId });
    assert.deepEqual(
      list.exports.map((e) => [e.id, e.status]),
      [[second.id, "CANCELLED"], [created.id, "COMPLETED"]],
    );
    report({ completed: created.id, cancelled: second.id, downloadedLines: lines.length, totalCount: list.totalCount });
  },

  // Every failure is an RpcError carrying the error table's code, data.code and (for params) issues.
  async errors() {
    const badFormat = await rejection(client.batchExport.create({ ...traces, format: "XLSX" as "CSV" }));
    assert.equal(badFormat.code, -32602);
    assert.equal(badFormat.data.code, "BAD_REQUEST");
    assert.equal(badFormat.method, "batchExport.create");
    assert.deepEqual(badFormat.data.issues?.map((issue) => issue.loc), [["format"]]);

    const stranger = createClient({ url, token: "not-a-session-token" });
    const unauthorized = await rejection(stranger.batchExport.all({ projectId }));
    assert.equal(unauthorized.code, -32001);
    assert.equal(unauthorized.data.code, "UNAUTHORIZED");
    assert.equal(unauthorized.data.httpStatus, 401);

    const missing = await rejection(client.batchExport.cancel({ projectId, batchExportId: "no-such-export" }));
    assert.equal(missing.data.code, "NOT_FOUND");
    assert.equal(missing.code, -32004);

    const queued = await client.batchExport.create(traces);
    const notReady = await rejection(client.batchExport.downloadUrl({ projectId, batchExportId: queued.id }));
    assert.equal(notReady.data.code, "PRECONDITION_FAILED");
    assert.equal(notReady.code, -32012);
    report({ codes: [badFormat, unauthorized, missing, notReady].map((e) => e.data.code) });
  },

  // Several calls, one HTTP request; each call gets its own result or error.
  async batch() {
    let requests = 0;
    const counting = createClient({
      url,
      token: async () => token,
      fetch: (input, init) => {
        requests += 1;
        return fetch(input, init);
      },
    });
    const [created, list] = await counting.$batch((b) => [b.batchExport.create(traces), b.batchExport.all({ projectId, limit: 1 })]);
    assert.equal(requests, 1);
    assert.equal(created.status, "QUEUED");
    assert.equal(list.exports.length <= 1, true);

    const [cancelled, again] = await counting.$batchSettled((b) => [
      b.batchExport.cancel({ projectId, batchExportId: created.id }),
      b.batchExport.cancel({ projectId, batchExportId: "no-such-export" }),
    ]);
    assert.equal(requests, 2);
    assert.ok(cancelled.ok && cancelled.value.status === "CANCELLED");
    assert.ok(!again.ok && again.error.data.code === "NOT_FOUND");

    const failed = await rejection(
      counting.$batch((b) => [b.batchExport.all({ projectId }), b.batchExport.downloadUrl({ projectId, batchExportId: created.id })]),
    );
    assert.equal(failed.data.code, "PRECONDITION_FAILED");
    assert.equal(requests, 3);
    report({ requests, cancelled: created.id });
  },

  // A project's stream carries a new export from its creation: the QUEUED event is what create returned.
  async subscribe() {
    const live = follow(client, { projectId });
    await live.started();
    report({ started: true });
    await caller("following"); // the server has the stream in place
    const created = await client.batchExport.create({ ...traces, name: "seen live" });
    const [queued] = await live.upTo("the QUEUED event", (e) => e.id === created.id);
    assert.deepEqual(queued!.export, created);
    assert.match(queued!.id ?? "", /^[0-9]+$/);
    live.subscription.unsubscribe();
    report({ created: created.id, eventId: queued!.id, states: live.states });
  },

  // Refusals stop the subscription with onError: a role without read access, a token nobody issued.
  async refused() {
    const outcomes: Record<string, unknown> = {};
    for (const [who, bearer] of [["viewer", required("OTHER_TOKEN")], ["stranger", "not-a-session-token"]] as const) {
      let connections = 0;
      const counting = createClient({
        url,
        token: bearer,
        fetch: (input, init) => {
          connections += 1;
          return fetch(input, init);
        },
      });
      const live = follow(counting, { projectId }, { reconnect: { minDelayMs: 0, maxDelayMs: 0 } });
      const end = await live.ended();
      assert.ok(end instanceof RpcError, `expected an RpcError, got ${String(end)}`);
      // Had it reconnected, the next connection would have been made by now (no delay): one macrotask later.
      await new Promise((resolve) => setTimeout(resolve, 0));
      outcomes[who] = { code: end.data.code, numeric: end.code, message: end.message, connections, events: live.events.length };
    }
    report(outcomes);
  },

  // The connection is cut (by the caller's proxy, in front of STREAM_URL) while changes are committed:
  // the client reconnects with Last-Event-ID and gets every change once, in order.
  async resume() {
    const exportId = required("EXPORT_ID");
    const lastEventIds: (string | null)[] = [];
    const throughProxy = createClient({
      url: required("STREAM_URL"),
      token,
      fetch: (input, init) => {
        lastEventIds.push((init.headers as Record<string, string>)["last-event-id"] ?? null);
        return fetch(input, init);
      },
    });
    const live = follow(throughProxy, { projectId, batchExportId: exportId });
    const [queued] = await live.upTo("the export's state", (e) => e.status === "QUEUED");
    report({ seen: "QUEUED", id: queued!.id });
    await caller("processing");
    const [, processing] = await live.upTo("PROCESSING", (e) => e.status === "PROCESSING");
    report({ seen: "PROCESSING", id: processing!.id });
    await caller("cut, completed and released"); // the rest was committed while the connection was down
    const all = await live.upTo("COMPLETED", (e) => e.status === "COMPLETED");
    live.subscription.unsubscribe();
    report({
      events: all.map((e) => [e.export.status, e.export.progress.rowsExported, e.export.progress.rowsTotal, e.id]),
      lastEventIds,
      states: live.states,
    });
  },
};

/** A subscription's events as they come, to wait on in order (at most a minute per wait). */
function follow(from: Client, input: WatchBatchExports, options: Partial<SubscribeOptions<BatchExport>> = {}) {
  const events: { export: BatchExport; id: string | null }[] = [];
  const states: ConnectionState["state"][] = [];
  let changed: () => void = () => undefined;
  let end: RpcError | "complete" | null = null;
  let started = false;
  const subscription = from.batchExport.onChange.subscribe(input, {
    reconnect: { minDelayMs: 20, maxDelayMs: 500 },
    ...options,
    onStarted: () => {
      started = true;
      changed();
    },
    onData: (event, id) => {
      events.push({ export: event, id });
      changed();
    },
    onError: (error) => {
      end = error;
      changed();
    },
    onComplete: () => {
      end = "complete";
      changed();
    },
    onConnectionStateChange: (state) => states.push(state.state),
  });
  async function until(what: string, done: () => boolean, mayEnd = false): Promise<void> {
    const deadline = Date.now() + 60_000;
    while (!done()) {
      if (end !== null && !mayEnd) throw new Error(`the subscription ended (${String(end)}) before ${what}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`${what}: not within a minute; events: ${JSON.stringify(events.map((e) => e.export.status))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        changed = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
  return {
    events,
    states,
    subscription,
    started: () => until("the stream opened", () => started),
    /** The events up to the first that `accept`s, from the start. */
    upTo: async (what: string, accept: (event: BatchExport) => boolean) => {
      await until(what, () => events.some((e) => accept(e.export)));
      return events.slice(0, events.findIndex((e) => accept(e.export)) + 1);
    },
    ended: async () => {
      await until("the end", () => end !== null, true);
      return end;
    },
  };
}

// Read only by scenarios that wait for the caller, and closed at the end, so the others exit by themselves.
const stdin: { reader: ReturnType<typeof createInterface> | null; lines: AsyncIterator<string> | null } = { reader: null, lines: null };

/** Waits for the caller's go-ahead: the line it writes on stdin once it has done its part. */
async function caller(expected: string): Promise<void> {
  stdin.reader ??= createInterface({ input: process.stdin });
  stdin.lines ??= stdin.reader[Symbol.asyncIterator]();
  const line = await stdin.lines.next();
  assert.equal(line.value, expected);
}

async function waitFor(id: string, status: BatchExport["status"]): Promise<BatchExport> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const found = (await client.batchExport.all({ projectId, limit: 100 })).exports.find((e) => e.id === id);
    if (found?.status === status) return found;
    if (Date.now() > deadline) throw new Error(`export ${id} did not become ${status}: ${JSON.stringify(found)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function rejection(promise: Promise<unknown>): Promise<RpcError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof RpcError, `expected an RpcError, got ${String(error)}`);
    return error;
  }
  throw new assert.AssertionError({ message: "expected the call to fail" });
}

function report(value: unknown): void {
  console.log(JSON.stringify(value));
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const scenario = scenarios[process.argv[2] ?? ""];
if (!scenario) {
  console.error(`usage: node live.js <${Object.keys(scenarios).join("|")}>`);
  process.exit(2);
}
await scenario();
stdin.reader?.close();
