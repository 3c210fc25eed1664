import { createClient, RpcError } from "../src/client.js";

const client = createClient({ url: "/rpc", token: () => localStorage.getItem("sessionToken") });
const projectId = "my-project";
const created = await client.batchExport.create({ projectId, name: "one user", format: "CSV",
  query: { tableName: "traces", filter: [{ column: "userId", type: "string", operator: "=", value: "u-42" }] } });
const [list, cancelled] = await client.$batch((b) => [b.batchExport.all({ projectId }), b.batchExport.cancel({ projectId, batchExportId: created.id })]);
console.log(list.totalCount, cancelled.status);
try { await client.batchExport.downloadUrl({ projectId, batchExportId: created.id }); }
catch (e) { if (e instanceof RpcError && e.data.code === "PRECONDITION_FAILED") console.log("not ready yet"); }
// Follow the project's exports as they change; the client reconnects (resuming after the last event) by itself.
const live = client.batchExport.onChange.subscribe({ projectId }, {
  onData: (changed) => console.log(changed.name, changed.status, changed.progress.rowsExported),
  onError: (e) => console.log("stopped:", e.data.code),
});
live.unsubscribe();
