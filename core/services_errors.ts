/**
 * The errors of service calls, and how any error crosses nodes: the
 * answering node sends `name`, `code`, `message`, `status`, `retryable` and
 * `data`; the calling node rebuilds an instance of the class registered
 * under that `name` (Plexus' own error classes and the built-in `Error`
 * types are registered; a plugin adds its own with
 * {@linkcode registerErrorType}), so `instanceof` and `code` work on the
 * caller as they did where the error was thrown. An unknown name comes back
 * as a {@linkcode PlexusError} keeping the name. Moleculer does the same
 * with its `Errors.recreateError`.
 *
 * @module
 */
import { PlexusError } from "./errors.ts";
import {
  CircuitOpenError,
  ResilienceError,
  TimeoutError,
} from "./resilience/errors.ts";
import { TransportError } from "./transport.ts";

/** Why a service call failed before or outside the action's handler. */
export type ServiceErrorCode =
  | "service_not_found"
  | "invalid_params"
  | "no_node"
  | "forbidden";

const SERVICE_STATUS: Record<ServiceErrorCode, number> = {
  service_not_found: 404,
  invalid_params: 400,
  no_node: 503,
  forbidden: 403,
};

/**
 * A service call refused by the service layer: the action is defined
 * nowhere (404), its params fail the schema (400), no node offering it can
 * be reached or every one has an open circuit (503, retryable), or the
 * caller's role lacks the action's permission (403).
 *
 * @example Usage
 * ```ts
 * import { ServiceError } from "./services_errors.ts";
 * const err = new ServiceError("service_not_found", "no node offers 'orders.create'", { action: "orders.create" });
 * err.status; // 404
 * ```
 */
export class ServiceError extends PlexusError {
  /** Always `"ServiceError"`. */
  override name = "ServiceError";
  /** Why the call failed. */
  declare readonly code: ServiceErrorCode;
  /** The status and retryability follow `code`; `data` names the action. */
  constructor(
    code: ServiceErrorCode,
    message: string,
    data: Record<string, unknown> = {},
  ) {
    super(code, message, {
      status: SERVICE_STATUS[code],
      retryable: code === "no_node",
      data,
    });
  }
}

/** An error as it travels in a reply. */
export interface WireError {
  /** The error's `name` (its class, as registered). */
  name: string;
  /** What went wrong. */
  message: string;
  /** A `PlexusError`'s code. */
  code?: string;
  /** A `PlexusError`'s HTTP status. */
  status?: number;
  /** A `PlexusError`'s retryability. */
  retryable?: boolean;
  /** A `PlexusError`'s figures (JSON-safe). */
  data?: Record<string, unknown>;
  /** The node the error was thrown on. */
  node: string;
}

/** A class of errors (its constructor; only its prototype is used to rebuild one). */
// deno-lint-ignore no-explicit-any -- constructors differ; only the prototype is used
export type ErrorClass = abstract new (...args: any[]) => Error;
const TYPES = new Map<string, ErrorClass>([
  ["Error", Error],
  ["TypeError", TypeError],
  ["RangeError", RangeError],
  ["SyntaxError", SyntaxError],
  ["PlexusError", PlexusError],
  ["ServiceError", ServiceError],
  ["TransportError", TransportError],
  ["ResilienceError", ResilienceError],
  ["TimeoutError", TimeoutError],
  ["CircuitOpenError", CircuitOpenError],
]);

/**
 * Makes errors named `name` come back from other nodes as instances of
 * `type` (register the class on every node, before calls fail with it).
 *
 * @example Usage
 * ```ts
 * import { PlexusError } from "./errors.ts";
 * import { registerErrorType } from "./services_errors.ts";
 * class OutOfStock extends PlexusError {
 *   override name = "OutOfStock";
 * }
 * registerErrorType("OutOfStock", OutOfStock);
 * ```
 */
export function registerErrorType(name: string, type: ErrorClass): void {
  TYPES.set(name, type);
}

/**
 * `err` as it travels: name, message, and a `PlexusError`'s code, status,
 * retryability and data.
 *
 * @example Usage
 * ```ts
 * import { toWireError } from "./services_errors.ts";
 * toWireError(new TypeError("bad"), "node-a").name; // "TypeError"
 * ```
 */
export function toWireError(err: unknown, node: string): WireError {
  if (!(err instanceof Error)) {
    return { name: "Error", message: String(err), node };
  }
  const wire: WireError = { name: err.name, message: err.message, node };
  if (err instanceof PlexusError) {
    wire.code = err.code;
    wire.status = err.status;
    wire.retryable = err.retryable;
    if (err.data) wire.data = jsonSafe(err.data);
  }
  return wire;
}

function jsonSafe(data: Record<string, unknown>): Record<string, unknown> {
  try {
    return JSON.parse(JSON.stringify(data));
  } catch {
    return {};
  }
}

/**
 * The error `wire` describes, as an instance of the class registered under
 * its name (built without running the constructor, so every class works);
 * `data.node` says where it was thrown.
 *
 * @example Usage
 * ```ts
 * import { fromWireError, toWireError } from "./services_errors.ts";
 * import { TimeoutError } from "./resilience/errors.ts";
 * const back = fromWireError(toWireError(new TimeoutError("db", 50), "node-b"));
 * back instanceof TimeoutError; // true
 * ```
 */
export function fromWireError(wire: WireError): Error {
  const type = TYPES.get(wire.name);
  const plexus = wire.code !== undefined;
  const proto = type?.prototype ??
    (plexus ? PlexusError.prototype : Error.prototype);
  const err = Object.create(proto) as Error & Record<string, unknown>;
  Object.defineProperty(err, "message", {
    value: wire.message,
    writable: true,
    configurable: true,
  });
  err.name = wire.name;
  if (plexus || err instanceof PlexusError) {
    err.code = wire.code ?? "remote_error";
    err.status = wire.status ?? 500;
    err.retryable = wire.retryable ?? false;
    // The first hop names the node; a relayed error keeps that name.
    err.data = { node: wire.node, ...wire.data };
  }
  Object.defineProperty(err, "stack", {
    value: `${wire.name}: ${wire.message}\n    at node '${wire.node}'`,
    writable: true,
    configurable: true,
  });
  return err;
}
