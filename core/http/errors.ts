/**
 * The JSON error shape every route uses: `{"error":{"code","message"}}`,
 * and the one place a {@linkcode PlexusError} becomes a response.
 *
 * @module
 */
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { PlexusError } from "../errors.ts";

const CODES: Record<number, string> = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  413: "payload_too_large",
  426: "upgrade_required",
  429: "rate_limited",
  500: "internal",
  503: "unavailable",
};

/**
 * The usual code of an HTTP status: `not_found` for 404, `http_{status}`
 * for one without a name here.
 *
 * @example Usage
 * ```ts
 * import { statusCode } from "./errors.ts";
 * statusCode(404); // "not_found"
 * statusCode(418); // "http_418"
 * ```
 */
export function statusCode(status: number): string {
  return CODES[status] ?? `http_${status}`;
}

/** The body of an error response. */
export function errorBody(status: number, message: string, code?: string): {
  error: { code: string; message: string };
} {
  return { error: { code: code ?? statusCode(status), message } };
}

/** A JSON error response. */
export function errorResponse(
  status: ContentfulStatusCode,
  message: string,
  code?: string,
  headers?: HeadersInit,
): Response {
  return Response.json(errorBody(status, message, code), { status, headers });
}

/**
 * The response for a {@linkcode PlexusError}: its `status`, `code` and
 * message, and `Retry-After` when it is retryable and says how long to wait.
 *
 * @example Usage
 * ```ts
 * import { plexusErrorResponse } from "./errors.ts";
 * import { PlexusError } from "../errors.ts";
 * const res = plexusErrorResponse(
 *   new PlexusError("unavailable", "no leader yet", { status: 503, retryable: true, retryAfterS: 1 }),
 * );
 * res.status; // 503
 * res.headers.get("Retry-After"); // "1"
 * ```
 */
export function plexusErrorResponse(err: PlexusError): Response {
  return errorResponse(
    err.status as ContentfulStatusCode,
    err.message,
    err.code,
    err.retryable && err.retryAfterS !== undefined
      ? { "Retry-After": String(err.retryAfterS) }
      : undefined,
  );
}

/** Throws an {@linkcode HTTPException} whose response has the JSON error shape. */
export function httpError(
  status: ContentfulStatusCode,
  message: string,
  code?: string,
): never {
  throw new HTTPException(status, {
    message,
    res: errorResponse(status, message, code),
  });
}
