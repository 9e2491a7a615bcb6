/**
 * The replicated key-value routes Raft (`/api/v1/raft/kv/{key}`) and PBFT
 * (`/api/v1/pbft/kv/{key}`) both serve, the same way: `GET` reads
 * (`cluster:read`), `PUT {value}` writes, `POST {expect, value}`
 * compare-and-sets (`expect: null` = absent) and `DELETE` deletes (all three
 * `tasks:write`). Each plugin says how it reads and orders a command and
 * which of its errors are answers (503 not placed, 504 no answer in time);
 * a `TypeError` or `SyntaxError` (a bad body or command) is a 400.
 *
 * @module
 */
import { errorResponse, plexusErrorResponse } from "../../core/http/errors.ts";
import type { PlexusError } from "../../core/errors.ts";
import type { ApiRoutes } from "../../core/http/plugin_api.ts";

/** What {@linkcode addKvRoutes} needs of a consensus plugin. */
export interface KvRouteHandlers {
  /** A (linearizable) read of `key`: the answer's fields after `key`. */
  read(key: string): Promise<object>;
  /** Orders a `write`, `cas` or `delete` command (not yet validated): the answer. */
  write(command: Record<string, unknown>): Promise<object>;
  /** Whether `err` is one of the plugin's errors that are answers, not bugs. */
  isAnswer(err: unknown): err is PlexusError;
}

/**
 * The HTTP answer for `err`: the plugin's own errors as they say, a bad
 * request as 400; anything else is rethrown (a 500 from the app).
 *
 * @example Usage
 * ```ts ignore
 * kvFailure(new TypeError("expected a JSON object body"), isAnswer).status; // 400
 * ```
 */
export function kvFailure(
  err: unknown,
  isAnswer: KvRouteHandlers["isAnswer"],
): Response {
  if (isAnswer(err)) return plexusErrorResponse(err);
  if (err instanceof TypeError || err instanceof SyntaxError) {
    return errorResponse(400, err.message, "bad_request");
  }
  throw err;
}

/**
 * A request's JSON object body; a `TypeError` (400) for anything else.
 *
 * @example Usage
 * ```ts
 * import { jsonObjectBody } from "./kv_routes.ts";
 * await jsonObjectBody(new Request("http://x", { method: "POST", body: '{"value":1}' })); // { value: 1 }
 * ```
 */
export async function jsonObjectBody(
  req: Request,
): Promise<Record<string, unknown>> {
  try {
    const b = await req.json();
    if (b && typeof b === "object" && !Array.isArray(b)) return b;
  } catch { /* answered below */ }
  throw new TypeError("expected a JSON object body");
}

/**
 * Adds `GET`, `PUT`, `POST` and `DELETE` `/kv/:key` to `routes`.
 *
 * @example Usage
 * ```ts ignore
 * addKvRoutes(ctx.api("raft"), {
 *   read: (key) => need().read(key),
 *   write: (cmd) => need().propose(parseKvCommand(cmd)),
 *   isAnswer: (e) => e instanceof RaftUnavailableError || e instanceof RaftTimeoutError,
 * });
 * ```
 */
export function addKvRoutes(routes: ApiRoutes, h: KvRouteHandlers): void {
  const answer = async (run: () => Promise<object>) => {
    try {
      return Response.json(await run());
    } catch (err) {
      return kvFailure(err, h.isAnswer);
    }
  };
  routes.get("/kv/:key", "cluster:read", (c) => {
    const key = c.req.param("key");
    return answer(async () => ({ key, ...await h.read(key) }));
  });
  routes.put("/kv/:key", "tasks:write", (c) =>
    answer(async () => {
      const b = await jsonObjectBody(c.req.raw);
      return h.write({ op: "write", key: c.req.param("key"), value: b.value });
    }));
  routes.post("/kv/:key", "tasks:write", (c) =>
    answer(async () => {
      const b = await jsonObjectBody(c.req.raw);
      return h.write({
        op: "cas",
        key: c.req.param("key"),
        expect: b.expect === undefined ? null : b.expect,
        value: b.value,
      });
    }));
  routes.delete(
    "/kv/:key",
    "tasks:write",
    (c) => answer(() => h.write({ op: "delete", key: c.req.param("key") })),
  );
}
