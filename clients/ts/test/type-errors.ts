// Type tests: wrong inputs must not compile, and results carry the generated types.
// Each `@ts-expect-error` is followed by the text its diagnostic must mention; tests/ts strips the
// directives and checks that exactly these lines fail, each for that reason.
import {
  createClient,
  RpcError,
  type BatchExport,
  type BatchExportList,
  type BatchExportQuery,
  type DownloadUrl,
  type ListBatchExports,
  type RpcErrorCode,
  type Unsubscribable,
  type WatchBatchExports,
} from "../src/client.js";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type RequiredKeys<T> = { [K in keyof T]-?: {} extends Pick<T, K> ? never : K }[keyof T];
function assertType<T extends true>(): void {}

export async function typeTests(): Promise<void> {
  const client = createClient({ url: "http://127.0.0.1:8000/rpc", token: "token" });
  const projectId = "p";
  const query = { tableName: "traces" } as const;

  // @ts-expect-error "XLSX"
  await client.batchExport.create({ projectId, name: "n", query, format: "XLSX" });
  // @ts-expect-error "users"
  await client.batchExport.create({ projectId, name: "n", format: "CSV", query: { tableName: "users" } });
  // @ts-expect-error 'projectId'
  await client.batchExport.create({ name: "n", query, format: "CSV" });
  // @ts-expect-error "contains"
  await client.batchExport.create({ projectId, name: "n", format: "CSV", query: { tableName: "traces", filter: [{ column: "timestamp", type: "datetime", operator: "contains", value: "2025-01-01T00:00:00Z" }] } });
  // @ts-expect-error ">"
  await client.batchExport.create({ projectId, name: "n", format: "CSV", query: { tableName: "traces", filter: [{ column: "bookmarked", type: "boolean", operator: ">", value: true }] } });
  // @ts-expect-error 'projectID'
  await client.batchExport.all({ projectID: projectId });
  // @ts-expect-error 'batchExportId'
  await client.batchExport.cancel({ projectId });
  // @ts-expect-error 'remove'
  await client.batchExport.remove({ projectId });
  // @ts-expect-error "DONE"
  (await client.batchExport.create({ projectId, name: "n", query, format: "CSV" })).status === "DONE";

  assertType<Equal<Awaited<ReturnType<typeof client.batchExport.create>>, BatchExport>>();
  assertType<Equal<Awaited<ReturnType<typeof client.batchExport.all>>, BatchExportList>>();
  assertType<Equal<Awaited<ReturnType<typeof client.batchExport.downloadUrl>>, DownloadUrl>>();

  // Fields with defaults are optional to send and always present in results; datetimes are ISO strings.
  assertType<Equal<RequiredKeys<ListBatchExports>, "projectId">>();
  assertType<Equal<RequiredKeys<BatchExportQuery>, "tableName">>();
  assertType<Equal<RequiredKeys<BatchExport["query"]>, keyof BatchExport["query"]>>();
  assertType<Equal<BatchExport["createdAt"], string>>();
  const created = await client.batchExport.create({ projectId, name: "n", query, format: "JSONL" });
  // A result's query can be sent back as it is.
  await client.batchExport.create({ projectId, name: "again", query: created.query, format: created.format });

  const [list, link] = await client.$batch((b) => [b.batchExport.all({ projectId }), b.batchExport.downloadUrl({ projectId, batchExportId: created.id })]);
  assertType<Equal<typeof list, BatchExportList>>();
  assertType<Equal<typeof link, DownloadUrl>>();
  const [settled] = await client.$batchSettled((b) => [b.batchExport.cancel({ projectId, batchExportId: created.id })]);
  if (settled.ok) assertType<Equal<typeof settled.value, BatchExport>>();
  else assertType<Equal<typeof settled.error, RpcError>>();

  // A subscription: `subscribe(input, handlers)`, typed by AppRouter's entry for batchExport.onChange.
  const live = client.batchExport.onChange.subscribe(
    { projectId, batchExportId: null },
    {
      onData(event, id) {
        assertType<Equal<typeof event, BatchExport>>();
        assertType<Equal<typeof id, string | null>>();
      },
      onError(error) {
        assertType<Equal<typeof error, RpcError>>();
      },
      onConnectionStateChange(state) {
        if (state.state === "reconnecting") assertType<Equal<typeof state.delayMs, number>>();
      },
      reconnect: { minDelayMs: 500, maxDelayMs: 10_000 },
    },
  );
  assertType<Equal<typeof live, Unsubscribable>>();
  assertType<Equal<Parameters<typeof client.batchExport.onChange.subscribe>[0], WatchBatchExports>>();
  live.unsubscribe();
  // @ts-expect-error 'projectID'
  client.batchExport.onChange.subscribe({ projectID: projectId }, { onData() {} });
  // @ts-expect-error 'onData'
  client.batchExport.onChange.subscribe({ projectId }, { onError() {} });
  // @ts-expect-error 'url'
  client.batchExport.onChange.subscribe({ projectId }, { onData(event: DownloadUrl) {} });
  // @ts-expect-error "DONE"
  client.batchExport.onChange.subscribe({ projectId }, { onData: (event) => event.status === "DONE" });
  // A subscription is not a query: it cannot be called, nor sent in a batch; a query cannot be subscribed to.
  // @ts-expect-error is not callable
  await client.batchExport.onChange({ projectId });
  // @ts-expect-error 'onChange'
  await client.$batch((b) => [b.batchExport.onChange({ projectId })]);
  // @ts-expect-error 'subscribe'
  client.batchExport.all.subscribe({ projectId }, { onData() {} });

  try {
    await client.batchExport.cancel({ projectId, batchExportId: created.id });
  } catch (error) {
    if (error instanceof RpcError) {
      assertType<Equal<typeof error.data.code, RpcErrorCode>>();
      // @ts-expect-error "NOT_A_CODE"
      if (error.data.code === "NOT_A_CODE") return;
      for (const issue of error.data.issues ?? []) console.log(issue.loc.join("."), issue.msg);
    }
  }
}
