/**
 * One subscription over server-sent events: POST the request with `Accept: text/event-stream`, hand
 * each event to `onData` as it arrives, and when the connection goes, open it again after a backoff,
 * sending the last event id seen as `Last-Event-ID` so the server replays what was missed.
 *
 * Built on `fetch` and the response body's ReadableStream (browsers, Node ≥ 18), not on EventSource,
 * which can neither POST nor send an Authorization header. How a stream ends decides what follows:
 *
 *   event: return                          → onComplete; never reopened
 *   event: error, UNAUTHORIZED, FORBIDDEN,
 *     BAD_REQUEST, NOT_FOUND, … (a refusal) → onError; never reopened
 *   event: error, INTERNAL_SERVER_ERROR or
 *     TOO_MANY_REQUESTS (may pass)         → reopened after a backoff
 *   no final event (server restarting,
 *     network cut, silent for too long)    → reopened after a backoff
 *   fetch fails, an HTTP error, a reply
 *     that is not an event stream          → reopened after a backoff
 *
 * Exactly one of onComplete, onError and onStopped (you unsubscribed, or `signal` aborted) ends
 * every subscription; no handler is called after it.
 */
import { EventStreamParser, type StreamEvent } from "./event-stream.js";
import { RpcError } from "./rpc-error.js";
import type { RpcErrorCode, RpcErrorData } from "./types.js";

/** Why a subscription is being reopened: it never opened, the server failed it, or an open stream ended. */
export type ReconnectReason = "unreachable" | "refused" | "dropped";

export type ConnectionState =
  | { state: "connecting" }
  | { state: "open" }
  | {
      state: "reconnecting";
      reason: ReconnectReason;
      /** What went wrong: an RpcError, or the fetch's own error (a TypeError when the server cannot be reached). */
      error: Error;
      /** Failed connections in a row since the stream last delivered anything (1, 2, …). */
      attempt: number;
      /** How long the client waits before the next connection. */
      delayMs: number;
    };

export interface SubscriptionHandlers<Output> {
  /** Each event, with its id (what a reconnection resumes after), or null for an event without one. */
  onData(event: Output, id: string | null): void;
  /** The server refused the subscription or ended it with an error that retrying cannot fix. */
  onError?(error: RpcError): void;
  /** A connection's stream opened: the first time, and again after each reconnection.
   * `lastEventId` is where it resumed (the server replays what came after it), or null for a fresh start. */
  onStarted?(info: { lastEventId: string | null }): void;
  /** The server said the subscription has nothing more (`event: return`). */
  onComplete?(): void;
  /** You unsubscribed, or `signal` aborted. */
  onStopped?(): void;
  onConnectionStateChange?(state: ConnectionState): void;
}

export interface ReconnectOptions {
  /** The first wait after a failure (default 1000 ms); the server's `retry:` replaces it. */
  minDelayMs?: number;
  /** The longest wait, however many failures in a row (default 30000 ms). */
  maxDelayMs?: number;
}

export interface SubscribeOptions<Output> extends SubscriptionHandlers<Output> {
  /** Aborting it unsubscribes. */
  signal?: AbortSignal;
  /** Resume after this event id from the start, as if reconnecting. */
  lastEventId?: string | null;
  reconnect?: ReconnectOptions;
  /** A connection that receives nothing for this long (not even the server's heartbeat comment, every
   * 15 s by default) is presumed dead and reopened; 0 never gives up on one. Default 45000 ms. */
  idleTimeoutMs?: number;
}

export interface Unsubscribable {
  unsubscribe(): void;
}

/** What the client knows of the endpoint and the request; `createClient` fills it in. */
export interface StreamRequest {
  url: string;
  method: string;
  id: number;
  input: unknown;
  token: () => Promise<string | null | undefined>;
  fetch: (url: string, init: RequestInit) => Promise<Response>;
}

// Errors that may pass: the same request later can succeed. Every other code is a refusal.
const RETRYABLE: ReadonlySet<RpcErrorCode> = new Set<RpcErrorCode>(["INTERNAL_SERVER_ERROR", "TOO_MANY_REQUESTS"]);
const DEFAULT_MIN_DELAY_MS = 1000;
const DEFAULT_MAX_DELAY_MS = 30_000;
const DEFAULT_IDLE_TIMEOUT_MS = 45_000;

type Outcome =
  | { end: "complete" }
  | { end: "error"; error: RpcError }
  | { end: "retry"; reason: ReconnectReason; error: Error };

export function openSubscription<Output>(request: StreamRequest, options: SubscribeOptions<Output>): Unsubscribable {
  const subscription = new Subscription(request, options);
  // Started once `subscribe` has returned: no handler runs before the caller holds the subscription.
  queueMicrotask(() => void subscription.run());
  return subscription;
}

class Subscription<Output> implements Unsubscribable {
  private readonly stopping = new AbortController();
  private finished = false;
  private lastEventId: string;
  private retryMs: number | null = null;
  private failures = 0;
  private readonly onAbort = () => this.unsubscribe();

  constructor(
    private readonly request: StreamRequest,
    private readonly options: SubscribeOptions<Output>,
  ) {
    this.lastEventId = options.lastEventId ?? "";
    options.signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  unsubscribe(): void {
    this.finish(() => this.options.onStopped?.());
  }

  async run(): Promise<void> {
    if (this.options.signal?.aborted) return this.unsubscribe();
    this.notify(() => this.options.onConnectionStateChange?.({ state: "connecting" }));
    while (!this.finished) {
      const outcome = await this.connect();
      if (this.finished) return;
      if (outcome.end === "complete") return this.finish(() => this.options.onComplete?.());
      if (outcome.end === "error") return this.finish(() => this.options.onError?.(outcome.error));
      this.failures += 1;
      const delayMs = this.backoff();
      const { reason, error } = outcome;
      this.notify(() =>
        this.options.onConnectionStateChange?.({ state: "reconnecting", reason, error, attempt: this.failures, delayMs }),
      );
      await sleep(delayMs, this.stopping.signal);
    }
  }

  /** One connection, from the request to the end of its stream. */
  private async connect(): Promise<Outcome> {
    const connection = new AbortController();
    const hangUp = () => connection.abort();
    this.stopping.signal.addEventListener("abort", hangUp);
    try {
      let response: Response;
      const resumedFrom = this.lastEventId;
      try {
        response = await this.request.fetch(this.request.url, {
          method: "POST",
          headers: await this.headers(),
          body: JSON.stringify({ jsonrpc: "2.0", id: this.request.id, method: this.request.method, params: this.request.input }),
          signal: connection.signal,
        });
      } catch (error) {
        return { end: "retry", reason: "unreachable", error: asError(error) };
      }
      const refusal = await this.refusal(response);
      if (refusal) return this.judge(refusal, "unreachable");
      if (!response.body) {
        const message = "This fetch cannot read a response as it streams in, so it cannot follow a subscription.";
        return { end: "error", error: this.clientError(message, response.status) };
      }
      this.notify(() => this.options.onConnectionStateChange?.({ state: "open" }));
      this.notify(() => this.options.onStarted?.({ lastEventId: resumedFrom || null }));
      return await this.read(response.body, connection);
    } finally {
      this.stopping.signal.removeEventListener("abort", hangUp);
      connection.abort(); // whatever is left of this connection is of no use now
    }
  }

  private async headers(): Promise<Record<string, string>> {
    const headers: Record<string, string> = { "content-type": "application/json", accept: "text/event-stream" };
    const token = await this.request.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (this.lastEventId) headers["last-event-id"] = this.lastEventId;
    return headers;
  }

  /** Why a response is not a stream to read: the server's JSON-RPC error if it sent one, else the HTTP status. */
  private async refusal(response: Response): Promise<RpcError | null> {
    const type = response.headers.get("content-type") ?? "";
    if (response.ok && type.toLowerCase().startsWith("text/event-stream")) return null;
    const reply = parseJson(await response.text().catch(() => ""));
    if (isErrorReply(reply)) return new RpcError(reply.error, this.request.method);
    const message = response.ok
      ? `The server answered with ${type || "no content type"}, not an event stream`
      : `HTTP ${response.status} ${response.statusText}`.trim();
    return this.clientError(message, response.status);
  }

  private async read(body: ReadableStream<Uint8Array>, connection: AbortController): Promise<Outcome> {
    const parser = new EventStreamParser(this.lastEventId);
    let comments = 0;
    parser.onComment = () => {
      // The first comment opens the stream; a later one is a heartbeat: the stream works.
      comments += 1;
      if (comments > 1) this.failures = 0;
    };
    const idle = new IdleTimer(this.options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS, () => connection.abort());
    const reader = body.getReader();
    try {
      for (;;) {
        idle.restart();
        const { done, value } = await reader.read();
        if (done) break;
        const events = parser.push(value);
        if (parser.retry !== null) this.retryMs = parser.retry;
        for (const event of events) {
          if (this.finished) return { end: "complete" }; // (run() stops before looking at it)
          const outcome = this.dispatch(event);
          if (outcome) return outcome;
        }
        // An id line alone (a checkpoint) moves the last event id without an event to dispatch.
        this.lastEventId = parser.lastEventId;
      }
      parser.end(); // an event cut off by the end of the stream is dropped, as the standard says
      return { end: "retry", reason: "dropped", error: this.clientError("The event stream ended without a final event.", 200) };
    } catch (error) {
      if (idle.fired) {
        const message = `Nothing arrived on the event stream for ${idle.ms} ms.`;
        return { end: "retry", reason: "dropped", error: this.clientError(message, 200) };
      }
      return { end: "retry", reason: "dropped", error: asError(error) };
    } finally {
      idle.stop();
      reader.cancel().catch(() => undefined);
    }
  }

  /** Hands a message to onData; an `error` or `return` event ends the connection with its outcome. */
  private dispatch(event: StreamEvent): Outcome | null {
    this.lastEventId = event.lastEventId;
    switch (event.type) {
      case "message": {
        const message = parseJson(event.data);
        if (!isNotification(message)) return { end: "error", error: this.unreadable(event) };
        this.failures = 0;
        const result = message.params.result as Output;
        this.notify(() => this.options.onData(result, event.lastEventId || null));
        return null;
      }
      case "error": {
        const reply = parseJson(event.data);
        if (!isErrorReply(reply)) return { end: "error", error: this.unreadable(event) };
        return this.judge(new RpcError(reply.error, this.request.method), "refused");
      }
      case "return":
        return { end: "complete" };
      default:
        return null; // an event type this client does not know: ignored, as EventSource would
    }
  }

  private judge(error: RpcError, reason: ReconnectReason): Outcome {
    return RETRYABLE.has(error.data.code) ? { end: "retry", reason, error } : { end: "error", error };
  }

  /** Doubles from the first delay (or the server's `retry:`) up to the ceiling, plus up to a quarter
   * more, so clients dropped together (an API process restarting) do not all come back at once. */
  private backoff(): number {
    const { minDelayMs = DEFAULT_MIN_DELAY_MS, maxDelayMs = DEFAULT_MAX_DELAY_MS } = this.options.reconnect ?? {};
    const first = this.retryMs ?? minDelayMs;
    const ceiling = Math.max(maxDelayMs, first);
    const doubled = Math.min(ceiling, first * 2 ** Math.min(this.failures - 1, 30));
    return Math.round(Math.min(ceiling, doubled * (1 + Math.random() / 4)));
  }

  private clientError(message: string, httpStatus: number): RpcError {
    const data = { code: "INTERNAL_SERVER_ERROR" as const, httpStatus, path: this.request.method };
    return new RpcError({ code: -32603, message, data }, this.request.method);
  }

  private unreadable(event: StreamEvent): RpcError {
    const message = `The server sent a "${event.type}" event the client cannot read: ${event.data.slice(0, 200)}`;
    return new RpcError({ code: -32700, message, data: { code: "PARSE_ERROR", httpStatus: 200, path: this.request.method } }, this.request.method);
  }

  private finish(last: () => void): void {
    if (this.finished) return;
    this.finished = true;
    this.options.signal?.removeEventListener("abort", this.onAbort);
    this.stopping.abort();
    this.notify(last, true);
  }

  /** Calls a handler; one that throws is reported as uncaught, and does not break the stream. */
  private notify(handler: () => void, evenIfFinished = false): void {
    if (this.finished && !evenIfFinished) return;
    try {
      handler();
    } catch (error) {
      setTimeout(() => {
        throw error;
      }, 0);
    }
  }
}

/** Aborts a connection that receives nothing for `ms` (0: never). */
class IdleTimer {
  fired = false;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly ms: number,
    private readonly onIdle: () => void,
  ) {}

  restart(): void {
    this.stop();
    if (this.ms > 0) {
      this.timer = setTimeout(() => {
        this.fired = true;
        this.onIdle();
      }, this.ms);
    }
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

function isNotification(value: unknown): value is { params: { result: unknown } } {
  if (typeof value !== "object" || value === null || !("params" in value)) return false;
  const params = (value as { params: unknown }).params;
  return typeof params === "object" && params !== null && "result" in params;
}

function isErrorReply(value: unknown): value is { error: { code: number; message: string; data?: Partial<RpcErrorData> } } {
  if (typeof value !== "object" || value === null || !("error" in value)) return false;
  const error = (value as { error: unknown }).error;
  return typeof error === "object" && error !== null && typeof (error as { message?: unknown }).message === "string";
}
