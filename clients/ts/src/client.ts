/**
 * A typed JSON-RPC 2.0 client of the batch-export service: the shape of `AppRouter`, over `fetch`.
 *
 *   const client = createClient({ url: "http://127.0.0.1:8000/rpc", token });
 *   const created = await client.batchExport.create({ projectId, name, query, format: "CSV" });
 *   const [list, link] = await client.$batch((b) => [b.batchExport.all({ projectId }), b.batchExport.downloadUrl(ref)]);
 *
 * Method "a.b.c" is `client.a.b.c(input)`. Every failure the server reports is thrown as an
 * `RpcError` (`code`, `data.code`, `data.issues`). Nothing here but `fetch` runs at runtime;
 * the procedure types come from `./types.ts`, generated from the server's models.
 */
import type { AppRouter, RpcErrorData } from "./types.js";

export type * from "./types.js";

/** What AppRouter says of one procedure. */
export interface ProcedureShape {
  input: unknown;
  output: unknown;
  kind: "query" | "mutation";
}

/** A router type: dotted method name → procedure (AppRouter, or another server's). */
export type RouterShape<R> = { [K in keyof R]: ProcedureShape };

export interface CallOptions {
  /** Aborts the HTTP request; the promise rejects with the fetch's AbortError. */
  signal?: AbortSignal;
}

/** A call recorded inside `$batch`: sent with the others in one HTTP request. */
export interface BatchCall<Output> {
  readonly method: string;
  readonly params: unknown;
  /** Type-level only: what the call resolves to. */
  readonly __output?: Output;
}

export type Settled<Output> = { ok: true; value: Output } | { ok: false; error: RpcError };

type Leaf<K extends string> = K extends `${string}.${string}` ? never : K;
type Head<K extends string> = K extends `${infer H}.${string}` ? H : never;
type Under<R, H extends string> = {
  [K in keyof R & string as K extends `${H}.${infer Rest}` ? Rest : never]: R[K];
};

type Caller<P, Result> = P extends ProcedureShape
  ? void extends P["input"]
    ? (input?: undefined, options?: CallOptions) => Result
    : (input: P["input"], options?: CallOptions) => Result
  : never;

/** The client's shape: the dotted names of R as nested objects, each leaf a typed call. */
export type RouterClient<R> = {
  [N in Leaf<keyof R & string> | Head<keyof R & string>]: N extends keyof R
    ? Caller<R[N], Promise<OutputOf<R[N]>>>
    : RouterClient<Under<R, N>>;
};

/** The same shape inside `$batch`: each leaf records a call instead of sending it. */
export type BatchBuilder<R> = {
  [N in Leaf<keyof R & string> | Head<keyof R & string>]: N extends keyof R
    ? Caller<R[N], BatchCall<OutputOf<R[N]>>>
    : BatchBuilder<Under<R, N>>;
};

type OutputOf<P> = P extends ProcedureShape ? P["output"] : never;
type Outputs<T extends readonly BatchCall<unknown>[]> = {
  -readonly [I in keyof T]: T[I] extends BatchCall<infer O> ? O : never;
};
type SettledOutputs<T extends readonly BatchCall<unknown>[]> = {
  -readonly [I in keyof T]: T[I] extends BatchCall<infer O> ? Settled<O> : never;
};

export interface BatchMethods<R> {
  /** Send the calls `build` records in one HTTP request; resolve to their results in order, or reject with the first error. */
  $batch<const T extends readonly BatchCall<unknown>[]>(
    build: (b: BatchBuilder<R>) => T,
    options?: CallOptions,
  ): Promise<Outputs<T>>;
  /** Like `$batch`, but every call settles on its own: `{ok: true, value}` or `{ok: false, error}`. */
  $batchSettled<const T extends readonly BatchCall<unknown>[]>(
    build: (b: BatchBuilder<R>) => T,
    options?: CallOptions,
  ): Promise<SettledOutputs<T>>;
}

export type Client<R = AppRouter> = RouterClient<R> & BatchMethods<R>;

export type TokenSource = string | null | undefined | (() => string | null | undefined | Promise<string | null | undefined>);

export interface ClientOptions {
  /** The JSON-RPC endpoint, e.g. "https://exports.example.com/rpc". */
  url: string;
  /** The session token sent as `Authorization: Bearer …`; a function is asked before every request. */
  token?: TokenSource;
  /** Defaults to the global fetch; only ever called with the URL and an init object. */
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
}

/** Any error the server reports, or a reply the client could not read (then `code` is -32603). */
export class RpcError extends Error {
  override readonly name = "RpcError";
  /** JSON-RPC `error.code`: -32602 for invalid params, -32004 for not found, … */
  readonly code: number;
  /** `error.data`: `code` is the tRPC key to switch on, `issues` lists fields that failed validation. */
  readonly data: RpcErrorData;
  /** The method called, or null when the whole request failed (parse error, body too large). */
  readonly method: string | null;

  constructor(error: { code: number; message: string; data?: Partial<RpcErrorData> }, method: string | null) {
    super(error.message);
    this.code = error.code;
    this.data = { code: "INTERNAL_SERVER_ERROR", httpStatus: 500, path: method, ...error.data } as RpcErrorData;
    this.method = method;
  }
}

export function isRpcError(value: unknown): value is RpcError {
  return value instanceof RpcError;
}

interface Request {
  jsonrpc: "2.0";
  id: number;
  method: string;
  params?: unknown;
}

type Reply =
  | { jsonrpc: "2.0"; id: number | string | null; result: unknown }
  | { jsonrpc: "2.0"; id: number | string | null; error: { code: number; message: string; data?: RpcErrorData } };

const BATCH_CALL = Symbol("batch call");

export function createClient<R extends RouterShape<R> = AppRouter>(options: ClientOptions): Client<R> {
  const fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
  if (!fetchImpl) throw new TypeError("createClient: no fetch available; pass options.fetch");
  let lastId = 0;

  async function post(body: Request | Request[], signal: AbortSignal | undefined): Promise<Map<unknown, Reply>> {
    const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
    const token = typeof options.token === "function" ? await options.token() : options.token;
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetchImpl(options.url, { method: "POST", headers, body: JSON.stringify(body), signal });
    const requests = Array.isArray(body) ? body : [body];
    let parsed: unknown;
    try {
      parsed = JSON.parse(await response.text());
    } catch {
      parsed = undefined;
    }
    const replies = new Map<unknown, Reply>();
    if (Array.isArray(parsed)) {
      for (const reply of parsed as Reply[]) replies.set(reply.id, reply);
    } else if (isReply(parsed) && (parsed.id === null || !Array.isArray(body))) {
      // One reply for the whole request (or the one call): the same answer for every call.
      for (const request of requests) replies.set(request.id, parsed);
    }
    for (const request of requests) {
      if (!replies.has(request.id)) {
        const message = response.ok ? "The server sent no reply for this call" : `HTTP ${response.status} ${response.statusText}`;
        replies.set(request.id, {
          jsonrpc: "2.0",
          id: request.id,
          error: { code: -32603, message, data: { code: "INTERNAL_SERVER_ERROR", httpStatus: response.status, path: request.method } },
        });
      }
    }
    return replies;
  }

  function request(method: string, input: unknown): Request {
    lastId += 1;
    return input === undefined ? { jsonrpc: "2.0", id: lastId, method } : { jsonrpc: "2.0", id: lastId, method, params: input };
  }

  function settle(request: Request, reply: Reply): Settled<unknown> {
    if ("error" in reply) return { ok: false, error: new RpcError(reply.error, reply.id === null ? null : request.method) };
    return { ok: true, value: reply.result };
  }

  async function call(method: string, input: unknown, callOptions?: CallOptions): Promise<unknown> {
    const single = request(method, input);
    const replies = await post(single, callOptions?.signal);
    const outcome = settle(single, replies.get(single.id)!);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  async function batch(build: (b: unknown) => readonly unknown[], callOptions?: CallOptions): Promise<Settled<unknown>[]> {
    const recorded = build(methodTree([], (method, [input]) => ({ [BATCH_CALL]: true, method, params: input })));
    const requests = recorded.map((entry) => {
      if (!(typeof entry === "object" && entry !== null && BATCH_CALL in entry)) {
        throw new TypeError("$batch: return the calls made on the builder, e.g. (b) => [b.batchExport.all({...})]");
      }
      const recordedCall = entry as unknown as BatchCall<unknown>;
      return request(recordedCall.method, recordedCall.params);
    });
    if (requests.length === 0) return [];
    const replies = await post(requests, callOptions?.signal);
    return requests.map((r) => settle(r, replies.get(r.id)!));
  }

  const root = {
    $batch: async (build: (b: unknown) => readonly unknown[], callOptions?: CallOptions) => {
      const settled = await batch(build, callOptions);
      const failed = settled.find((outcome) => !outcome.ok);
      if (failed && !failed.ok) throw failed.error;
      return settled.map((outcome) => (outcome.ok ? outcome.value : undefined));
    },
    $batchSettled: batch,
  };
  const tree = methodTree([], (method, [input, callOptions]) => call(method, input, callOptions as CallOptions | undefined));
  return new Proxy(root, {
    get: (target, key) => (key === "$batch" || key === "$batchSettled" ? target[key] : Reflect.get(tree as object, key)),
  }) as unknown as Client<R>;
}

/** `tree.a.b(x)` calls `leaf("a.b", [x])`; nothing is known of the names until they are used. */
function methodTree(path: string[], leaf: (method: string, args: unknown[]) => unknown): unknown {
  return new Proxy(() => undefined, {
    get: (_target, key) =>
      // "then" keeps the client from looking like a promise to `await`.
      typeof key === "string" && key !== "then" ? methodTree([...path, key], leaf) : undefined,
    apply: (_target, _this, args: unknown[]) => leaf(path.join("."), args),
  });
}

function isReply(value: unknown): value is Reply {
  return typeof value === "object" && value !== null && "jsonrpc" in value && ("result" in value || "error" in value);
}
