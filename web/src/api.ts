/** The page's one way to the API: the generated typed client, and errors put into words. */
import { createClient, RpcError, type Client, type RpcErrorCode } from "../../clients/ts/src/client.js";

export { RpcError };
export type { Client };

export function apiClient(token: () => string | null): Client {
  return createClient({ url: new URL("rpc", document.baseURI).href, token });
}

// What each kind of refusal means to the person in front of the page; the server's message says why.
const LEADS: Partial<Record<RpcErrorCode, string>> = {
  UNAUTHORIZED: "Not signed in.",
  FORBIDDEN: "Not allowed.",
  NOT_FOUND: "Not found.",
  BAD_REQUEST: "The server refused this request.",
  PRECONDITION_FAILED: "Not possible right now.",
  TOO_MANY_REQUESTS: "Too many exports at once.",
  INTERNAL_SERVER_ERROR: "The server failed.",
};

export function isUnauthorized(error: unknown): boolean {
  return error instanceof RpcError && error.data.code === "UNAUTHORIZED";
}

/** The role may not do this (a scope it lacks); the page says so instead of failing. */
export function isForbidden(error: unknown): boolean {
  return error instanceof RpcError && error.data.code === "FORBIDDEN";
}

/** One or two sentences a person can act on, for any error a call can throw. */
export function describeError(error: unknown): string {
  if (error instanceof RpcError) {
    const lead = LEADS[error.data.code];
    const issues = (error.data.issues ?? []).map((issue) => `${issue.loc.join(".")}: ${issue.msg}.`);
    return [lead, error.message, ...issues].filter(Boolean).join(" ");
  }
  // fetch rejects with a TypeError when the server cannot be reached at all.
  if (error instanceof TypeError) return `Cannot reach the server (${error.message}). Is it running?`;
  return error instanceof Error ? error.message : String(error);
}
