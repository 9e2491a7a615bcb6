/**
 * `GET /api/v1/events` as Server-Sent Events (or, with a WebSocket upgrade,
 * `WS /api/v1/events`), `POST /api/v1/events` to publish a `custom.*`
 * event and `POST /api/v1/events/filters` to check a filter (`{filter}` →
 * the parsed tree, or 400). Reading needs `cluster:read`, publishing
 * `tasks:write`.
 *
 * Query: `filter` (text or JSON, see filter.ts), `from` (`start`, `end`,
 * an offset, an ISO time or epoch ms; SSE's `Last-Event-ID` header wins),
 * `streams` (comma-separated). Each client reads the store through its own
 * subscription, so a slow client never holds up the bus or other clients;
 * its buffer is bounded: a client whose unsent bytes stay over
 * `maxClientBufferBytes` for `slowClientMs` is dropped with the reason (an
 * SSE `dropped` event, or WebSocket close code 4008).
 *
 * @module
 */
import type { ApiContext, ApiRoutes } from "../../core/plugin.ts";
import { PlexusError } from "../../core/plugin.ts";
import { plexusErrorResponse } from "../../core/http/errors.ts";
import type { EventBus, EventSubscription, SubscribeFrom } from "./bus.ts";
import { checkFilter, filterFromParam, formatFilter } from "./filter.ts";
import type { StoredEvent } from "./store.ts";

/** Close code for a WebSocket client that cannot keep up. */
export const SLOW_CLIENT_CLOSE_CODE = 4008;

/** Options for {@linkcode eventRoutes}. */
export interface EventRoutesOptions {
  /** Unsent bytes a client may hold. */
  maxClientBufferBytes: number;
  /** How long a client may stay over the limit before it is dropped, ms. */
  slowClientMs: number;
  /** SSE comment / WebSocket ping period, ms. */
  heartbeatMs: number;
  /** Counts clients connected and dropped. */
  onClient?: (change: "open" | "close" | "dropped") => void;
}

const OFFSET_RE = /^[0-9a-f]{20}([0-9a-f]{4})?$/;
const encoder = new TextEncoder();

/**
 * Reads `from`: `start`, `end`, an offset, epoch ms or an ISO time.
 *
 * @example Usage
 * ```ts
 * import { parseFrom } from "./http.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseFrom("1970-01-01T00:00:01Z"), { time: 1000 });
 * assert.deepEqual(parseFrom(undefined), "end");
 * ```
 */
export function parseFrom(value: string | undefined | null): SubscribeFrom {
  if (
    value === undefined || value === null || value === "" || value === "end"
  ) {
    return "end";
  }
  if (value === "start") return "start";
  if (OFFSET_RE.test(value)) return { after: value };
  if (/^[0-9]{1,15}$/.test(value)) return { time: Number(value) };
  const t = Date.parse(value);
  if (Number.isNaN(t) || value.length > 64) {
    throw new PlexusError(
      "bad_request",
      `from: expected start, end, an offset (24 hex digits), epoch ms or an ISO time, got '${
        value.slice(0, 64)
      }'`,
      { status: 400 },
    );
  }
  return { time: t };
}

/** Adds the routes to `routes` (the `events` prefix). */
export function eventRoutes(
  routes: ApiRoutes,
  bus: EventBus,
  options: EventRoutesOptions,
): { closeAll(): void } {
  const open = new Set<() => void>();
  const request = (c: ApiContext) => {
    const filter = filterFromParam(c.req.query("filter"));
    const from = parseFrom(
      c.req.header("last-event-id") ?? c.req.query("from"),
    );
    const streams = c.req.query("streams")?.split(",").filter(Boolean);
    const exp = c.var.principal?.exp;
    return { filter, from, streams, exp };
  };

  /** A refused input (bad filter, bad from) answers with its own status. */
  const answer = async (fn: () => Response | Promise<Response>) => {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof PlexusError) return plexusErrorResponse(err);
      throw err;
    }
  };

  routes.get("/", "cluster:read", (c) =>
    answer(() => {
      const r = request(c);
      if (c.req.header("upgrade")?.toLowerCase() === "websocket") {
        return websocket(c.req.raw, r);
      }
      return sse(r);
    }));

  routes.post("/", "tasks:write", (c) =>
    answer(async () => {
      let body: { type?: unknown; data?: unknown };
      try {
        body = await c.req.json();
      } catch {
        throw new PlexusError("bad_request", "body: expected JSON", {
          status: 400,
        });
      }
      if (typeof body?.type !== "string" || !body.type.startsWith("custom.")) {
        throw new PlexusError(
          "bad_request",
          `type: expected a 'custom.' event type, got ${
            JSON.stringify(body?.type)?.slice(0, 60)
          }`,
          { status: 400 },
        );
      }
      const offset = await bus.publish(body.type, body.data ?? {});
      return c.json({ offset }, 202);
    }));

  // Checks a filter without subscribing: for forms, and for filters too
  // long for a URL (they are refused the same way).
  routes.post("/filters", "cluster:read", (c) =>
    answer(async () => {
      let body: { filter?: unknown };
      try {
        body = await c.req.json();
      } catch {
        throw new PlexusError("bad_request", "body: expected JSON", {
          status: 400,
        });
      }
      const tree = typeof body?.filter === "string"
        ? filterFromParam(body.filter)
        : checkFilter(body?.filter);
      return c.json({ filter: tree, text: formatFilter(tree) });
    }));

  type Req = ReturnType<typeof request>;

  /** Ends the stream at the token's expiry, as `/ws` does. */
  const untilExpiry = (exp: number | undefined, end: () => void) => {
    if (exp === undefined) return () => {};
    const t = setTimeout(end, Math.max(0, exp * 1000 - Date.now()));
    return () => clearTimeout(t);
  };

  const sse = (r: Req): Response => {
    let sub: EventSubscription | undefined;
    let heartbeat: ReturnType<typeof setInterval> | undefined;
    let cancelExpiry = () => {};
    let pulled: (() => void) | null = null;
    let closed = false;
    const finish = (controller?: ReadableStreamDefaultController) => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      cancelExpiry();
      open.delete(end);
      void sub?.stop();
      options.onClient?.("close");
      try {
        controller?.close();
      } catch { /* the client went away first */ }
    };
    let end = () => {};
    const body = new ReadableStream<Uint8Array>({
      start: async (controller) => {
        end = () => finish(controller);
        open.add(end);
        options.onClient?.("open");
        cancelExpiry = untilExpiry(r.exp, () => {
          controller.enqueue(
            encoder.encode(
              `event: dropped\ndata: {"reason":"token expired"}\n\n`,
            ),
          );
          finish(controller);
        });
        controller.enqueue(encoder.encode(": connected\n\n"));
        heartbeat = setInterval(() => {
          if (!closed) controller.enqueue(encoder.encode(": heartbeat\n\n"));
        }, options.heartbeatMs);
        sub = await bus.subscribe(r.filter, async (e: StoredEvent) => {
          if (closed) return;
          controller.enqueue(
            encoder.encode(
              `id: ${e.offset}\nevent: ${e.type}\ndata: ${
                JSON.stringify(e)
              }\n\n`,
            ),
          );
          if ((controller.desiredSize ?? 1) > 0) return;
          const drained = await new Promise<boolean>((resolve) => {
            const t = setTimeout(() => resolve(false), options.slowClientMs);
            pulled = () => {
              clearTimeout(t);
              resolve(true);
            };
          });
          pulled = null;
          if (!drained && !closed) {
            options.onClient?.("dropped");
            controller.enqueue(encoder.encode(
              `event: dropped\ndata: ${
                JSON.stringify({
                  reason:
                    `slow consumer: over ${options.maxClientBufferBytes} unsent bytes for ${options.slowClientMs} ms`,
                  offset: e.offset,
                })
              }\n\n`,
            ));
            finish(controller);
          }
        }, { from: r.from, streams: r.streams });
        if (closed) void sub.stop();
      },
      pull: () => {
        pulled?.();
      },
      cancel: () => finish(),
    }, {
      highWaterMark: options.maxClientBufferBytes,
      size: (chunk) => chunk.byteLength,
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
      },
    });
  };

  const websocket = (req: Request, r: Req): Response => {
    const { socket, response } = Deno.upgradeWebSocket(req, {
      idleTimeout: 0,
    });
    let sub: EventSubscription | undefined;
    let cancelExpiry = () => {};
    const close = (code: number, reason: string) => {
      if (socket.readyState === WebSocket.OPEN) socket.close(code, reason);
    };
    const end = () => close(1001, "node shutting down");
    socket.addEventListener("open", async () => {
      open.add(end);
      options.onClient?.("open");
      cancelExpiry = untilExpiry(r.exp, () => close(4001, "token expired"));
      sub = await bus.subscribe(r.filter, async (e) => {
        if (socket.readyState !== WebSocket.OPEN) return;
        socket.send(JSON.stringify(e));
        if (socket.bufferedAmount <= options.maxClientBufferBytes) return;
        const t0 = Date.now();
        while (
          socket.readyState === WebSocket.OPEN &&
          socket.bufferedAmount > options.maxClientBufferBytes
        ) {
          if (Date.now() - t0 > options.slowClientMs) {
            options.onClient?.("dropped");
            close(
              SLOW_CLIENT_CLOSE_CODE,
              `slow consumer: over ${options.maxClientBufferBytes} unsent bytes for ${options.slowClientMs} ms`,
            );
            return;
          }
          // No drain event on a WebSocket: look again shortly.
          await new Promise((res) => setTimeout(res, 10));
        }
      }, { from: r.from, streams: r.streams });
      if (socket.readyState !== WebSocket.OPEN) void sub.stop();
    }, { once: true });
    socket.addEventListener("message", (m) => {
      // Nothing is expected from the client; refuse floods.
      const size = typeof m.data === "string" ? m.data.length : 4097;
      if (size > 4096) close(1009, "message too big");
    });
    socket.addEventListener("close", () => {
      cancelExpiry();
      void sub?.stop();
      if (open.delete(end)) options.onClient?.("close");
    }, { once: true });
    return response;
  };

  return {
    closeAll() {
      for (const end of [...open]) end();
    },
  };
}
