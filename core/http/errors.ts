/**
 * The JSON error shape every route uses: `{"error":{"code","message"}}`.
 *
 * @module
 */
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";

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

/** The body of an error response. */
export function errorBody(status: number, message: string, code?: string): {
  error: { code: string; message: string };
} {
  return {
    error: { code: code ?? CODES[status] ?? `http_${status}`, message },
  };
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
