/**
 * `GET /api/v1/services` (the actions offered across the cluster and the
 * nodes offering each) and `POST /api/v1/services/{action}` (call one:
 * the body is the params; `timeout`, `retries`, `nodeId` and `key` come as
 * query parameters, the correlation id as `X-Correlation-Id` and the trace
 * as `traceparent`).
 *
 * The route lets in any authenticated caller with `cluster:read`; the
 * action's own permission (`tasks:write` unless it declares another) is
 * checked with the caller's role on the node that runs it, so the route
 * needs to know nothing of actions defined elsewhere. Errors keep the
 * contract's JSON shape: 400 params refused by the schema, 403 a role
 * without the action's permission, 404 no node offers the action, 503 no
 * node left to try, 504 the deadline passed; an error the action threw
 * answers with its own status (500 when it has none).
 *
 * @module
 */
import { Hono } from "hono";
import { z } from "zod";
import { actionNameSchema, callOptionsSchema } from "../contracts/services.ts";
import { PlexusError } from "../errors.ts";
import type { ServiceBroker } from "../services.ts";
import { principalOf, requirePermission } from "./auth.ts";
import { errorResponse, plexusErrorResponse } from "./errors.ts";
import { readJson } from "./json.ts";
import { describeIssues } from "../plugin.ts";

const query = z.strictObject({
  timeout: z.coerce.number().int().positive().max(600_000).optional(),
  retries: z.coerce.number().int().min(0).max(10).optional(),
  nodeId: z.string().min(1).max(128).optional(),
  key: z.string().max(1024).optional(),
});

/**
 * Routes for service calls, to mount at `/api/v1/services`.
 *
 * @example Usage
 * ```ts ignore
 * app.route("/api/v1/services", serviceRoutes(kernel.services));
 * ```
 */
export function serviceRoutes(broker: ServiceBroker): Hono {
  const app = new Hono();
  app.get(
    "/",
    requirePermission("cluster:read"),
    async (c) =>
      c.json({ nodeId: broker.nodeId, actions: await broker.list() }),
  );
  app.post("/:action", requirePermission("cluster:read"), async (c) => {
    const action = c.req.param("action");
    if (!actionNameSchema.safeParse(action).success) {
      return errorResponse(
        400,
        `'${action}' is not an action name: expected dot-separated segments like 'orders.create'`,
      );
    }
    const q = query.safeParse(c.req.query());
    if (!q.success) {
      return errorResponse(400, describeIssues(q.error, c.req.query()));
    }
    const ids = callOptionsSchema.safeParse({
      correlationId: c.req.header("x-correlation-id"),
      traceparent: c.req.header("traceparent"),
    });
    if (!ids.success) {
      return errorResponse(400, describeIssues(ids.error, {}));
    }
    const params = await readJson(c, z.unknown());
    if (params instanceof Response) return params;
    try {
      const result = await broker.callAs(
        principalOf(c)?.role,
        action,
        params,
        { ...q.data, ...ids.data },
      );
      return c.json({ result: result ?? null });
    } catch (err) {
      if (err instanceof PlexusError) return plexusErrorResponse(err);
      return errorResponse(
        500,
        `action '${action}' failed: ${
          err instanceof Error ? `${err.name}: ${err.message}` : String(err)
        }`,
        "action_failed",
      );
    }
  });
  return app;
}
