/**
 * A typed JSON-RPC 2.0 client of the batch-export service: the shape of `AppRouter`, over `fetch`.
 *
 *   const client = createClient({ url: "http://127.0.0.1:8000/rpc", token });
 *   const created = await client.batchExport.create({ projectId, name, query, format: "CSV" });
 *   const [list, link] = await client.$batch((b) => [b.batchExport.all({ projectId }), b.batchExport.downloadUrl(ref)]);
 *   const live = client.batchExport.onChange.subscribe({ projectId }, { onData: (exp, id) => …, onError: (e) => … });
 *   live.unsubscribe();
 *
 * Query or mutation "a.b.c" is `client.a.b.c(input)`. Every failure the server reports is thrown as
 * an `RpcError` (`code`, `data.code`, `data.issues`). Subscription "a.b" is
 * `client.a.b.subscribe(input, handlers)`: server-sent events, reconnected with Last-Event-ID
 * (./subscription.ts); it cannot be called, nor sent in a `$batch` (so a procedure may not be named
 * `subscribe`). Nothing here but `fetch` runs at runtime; the procedure types come from
 * `./types.ts`, generated from the server's models.
 */
import { RpcError } from "./rpc-error.js";
import { openSubscription, type SubscribeOptions, type Unsubscribable } from "./subscription.js";
import type { AppRouter, RpcErrorData } from "./types.js";

export type * from "./types.js";
export { RpcError, isRpcError } from "./rpc-error.js";
export { EventStreamParser, type StreamEvent } from "./event-stream.js";
export type {
  ConnectionState,
  ReconnectOptions,
  ReconnectReason,
  SubscribeOptions,
  SubscriptionHandlers,
  Unsubscribable,
} from "./subscription.js";

/** What AppRouter says of one procedure. */
export interface ProcedureShape {
  input: unknown;
  output: unknown;
  kind: "query" | "mutation" | "subscription";
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

/** A subscription's leaf: not a call, an object whose `subscribe` opens the stream. */
export interface SubscriptionLeaf<Input, Output> {
  subscribe(input: Input, options: SubscribeOptions<Output>): Unsubscribable;
}

/** The client's shape: the dotted names of R as nested objects, each leaf a typed call or a subscription. */
export type RouterClient<R> = {
  [N in Leaf<keyof R & string> | Head<keyof R & string>]: N extends keyof R
    ? R[N] extends { kind: "subscription"; input: infer Input; output: infer Output }
      ? SubscriptionLeaf<Input, Output>
      : Caller<R[N], Promise<OutputOf<R[N]>>>
    : RouterClient<Under<R, N>>;
};

/** R without its subscriptions: what `$batch` may send. */
type CallsOf<R> = { [K in keyof R as R[K] extends { kind: "subscription" } ? never : K]: R[K] };

/** The client's shape inside `$batch`, subscriptions left out: each leaf records a call instead of sending it. */
export type BatchBuilder<R> = BatchTree<CallsOf<R>>;
type BatchTree<R> = {
  [N in Leaf<keyof R & string> | Head<keyof R & string>]: N extends keyof R
    ? Caller<R[N], BatchCall<OutputOf<R[N]>>>
    : BatchTree<Under<R, N>>;
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
// `client.a.b.subscribe(input, options)` opens subscription "a.b".
const SUBSCRIBE = ".subscribe";

export function createClient<R extends RouterShape<R> = AppRouter>(options: ClientOptions): Client<R> {
  const fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
  if (!fetchImpl) throw new TypeError("createClient: no fetch available; pass options.fetch");
  let lastId = 0;

  async function token(): Promise<string | null | undefined> {
    return typeof options.token === "function" ? await options.token() : options.token;
  }

  async function post(body: Request | Request[], signal: AbortSignal | undefined): Promise<Map<unknown, Reply>> {
    const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
    const bearer = await token();
    if (bearer) headers.authorization = `Bearer ${bearer}`;
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
  function subscribe(method: string, input: unknown, subscribeOptions: SubscribeOptions<unknown>): Unsubscribable {
    lastId += 1;
    return openSubscription({ url: options.url, method, id: lastId, input, token, fetch: fetchImpl }, subscribeOptions);
  }

  const tree = methodTree([], (method, [input, second]) =>
    method.endsWith(SUBSCRIBE)
      ? subscribe(method.slice(0, -SUBSCRIBE.length), input, second as SubscribeOptions<unknown>)
      : call(method, input, second as CallOptions | undefined),
  );
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
