// Drives the compiled client against a running server; tests/ts/test_live_client.py starts one.
//   node build/test/live.js <flow|errors|batch>   with RPC_URL, TOKEN and PROJECT_ID in the environment
// Prints one JSON line per step it wants the caller to see; any failed assertion exits non-zero.
import assert from "node:assert/strict";
import { createClient, RpcError, type BatchExport, type CreateBatchExport } from "../src/client.js";

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
};

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
