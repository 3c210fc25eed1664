/** The one error type of the client: what the server reported, or a reply the client could not read. */
import type { RpcErrorData } from "./types.js";

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
