/**
 * The agent gateway's HTTP routes, claimed with `ctx.api("agents")` and
 * `ctx.api("gateway")`, so they sit behind the node's authentication,
 * permission, rate-limit and audit chain (docs/gateway.md):
 *
 * - `POST /agents` (`agents:write`): enrol `{"agentId","publicKey","roles","replace"?}`;
 * - `GET /agents` (`agents:read`): enrolled agents;
 * - `GET /agents/{id}/status` (`agents:read`);
 * - `DELETE /agents/{id}` (`agents:write`): disconnect (4401) and remove;
 * - `POST /agents/{id}/send` (`agents:send`);
 * - `POST /agents/broadcast` (`agents:broadcast`);
 * - `POST /gateway/wake|push|kick` (`"node"`): node-to-node only (a node's
 *   signature).
 *
 * @module
 */
import { z } from "zod";
import { agentEnrolmentSchema, type AgentRecord } from "./enrolment.ts";
import { type Gateway, GatewayError, type SendOptions } from "./gateway.ts";
import type { ApiRoutes } from "../core/plugin.ts";
import { errorResponse, plexusErrorResponse } from "../core/http/errors.ts";
import { readJson } from "../core/http/json.ts";

const messageFields = {
  /** Any JSON value (required). */
  message: z.unknown(),
  message_type: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).optional(),
  priority: z.number().int().min(0).max(9).optional(),
  /** Time-to-live of a queued message, ms. */
  ttl_ms: z.number().int().min(1000).max(30 * 86_400_000).optional(),
  correlation_id: z.string().regex(/^[\x21-\x7e]{1,128}$/).optional(),
};

const sendSchema = z.strictObject({
  /** A channel name (`policies`) or the full `backend.{id}.{name}`. */
  channel: z.string().min(1).max(700),
  ...messageFields,
});

const broadcastSchema = z.strictObject({
  /** A channel name. */
  channel: z.string().min(1).max(512),
  ...messageFields,
});

const wakeSchema = z.strictObject({
  items: z.array(z.strictObject({
    agentId: z.string().min(1).max(128),
    messageId: z.string().min(1).max(128),
  })).min(1).max(10_000),
});

const pushSchema = z.strictObject({
  items: z.array(z.strictObject({
    agentId: z.string().min(1).max(128),
    channel: z.string().min(1).max(512),
    body: z.string(),
    id: z.string().min(1).max(128),
    priority: z.number().int().min(0).max(9),
    messageType: z.string().min(1).max(64),
    correlationId: z.string().max(128).optional(),
  })).min(1).max(10_000),
});

const kickSchema = z.strictObject({
  agentId: z.string().min(1).max(128),
  session: z.string().max(128).optional(),
  code: z.union([z.literal(4401), z.literal(4409)]),
  reason: z.string().max(100).default("closed by another node"),
});

function agentJson(r: AgentRecord) {
  return {
    agentId: r.agentId,
    publicKey: r.publicKey,
    roles: r.roles,
    enrolledAt: new Date(r.enrolledAt).toISOString(),
    enrolledBy: r.enrolledBy,
  };
}

function sendOptions(
  body: z.output<typeof sendSchema> | z.output<typeof broadcastSchema>,
  sender: string,
): SendOptions {
  return {
    messageType: body.message_type,
    priority: body.priority,
    ttlMs: body.ttl_ms,
    correlationId: body.correlation_id,
    sender,
  };
}

function refused(err: unknown): Response {
  if (err instanceof GatewayError) return plexusErrorResponse(err);
  throw err;
}

/**
 * Adds the routes: `agents` serves `/api/v1/agents/...`, `peers`
 * `/api/v1/gateway/...` (node-to-node).
 *
 * @example Usage
 * ```ts ignore
 * agentRoutes(ctx.api("agents"), ctx.api("gateway"), gateway);
 * ```
 */
export function agentRoutes(
  agents: ApiRoutes,
  peers: ApiRoutes,
  gateway: Gateway,
): void {
  agents.post("/", "agents:write", async (c) => {
    const input = await readJson(c, agentEnrolmentSchema);
    if (input instanceof Response) return input;
    try {
      const { record, replaced } = await gateway.enrol(
        input,
        c.var.principal.sub,
      );
      return c.json({ ...agentJson(record), replaced }, replaced ? 200 : 201);
    } catch (err) {
      return refused(err);
    }
  });

  agents.get("/", "agents:read", async (c) => {
    return c.json((await gateway.list()).map(agentJson));
  });

  agents.get("/:id/status", "agents:read", async (c) => {
    const id = c.req.param("id");
    const status = await gateway.status(id);
    return status
      ? c.json(status)
      : errorResponse(404, `no agent '${id.slice(0, 80)}'`);
  });

  agents.delete("/:id", "agents:write", async (c) => {
    const id = c.req.param("id");
    return await gateway.remove(id)
      ? c.body(null, 204)
      : errorResponse(404, `no agent '${id.slice(0, 80)}'`);
  });

  agents.post("/broadcast", "agents:broadcast", async (c) => {
    const body = await readJson(c, broadcastSchema);
    if (body instanceof Response) return body;
    if (body.message === undefined) {
      return errorResponse(400, "message is required");
    }
    try {
      const r = await gateway.broadcast(
        body.channel,
        body.message,
        sendOptions(body, c.var.principal.sub),
      );
      return c.json({
        message_id: r.messageId,
        sent_to: r.sentTo,
        queued: r.queued,
        failed: r.failed,
      });
    } catch (err) {
      return refused(err);
    }
  });

  agents.post("/:id/send", "agents:send", async (c) => {
    const body = await readJson(c, sendSchema);
    if (body instanceof Response) return body;
    if (body.message === undefined) {
      return errorResponse(400, "message is required");
    }
    try {
      const r = await gateway.send(
        c.req.param("id"),
        body.channel,
        body.message,
        sendOptions(body, c.var.principal.sub),
      );
      if (r.status === "failed") {
        return c.json({
          message_id: r.messageId,
          status: r.status,
          error: {
            code: "unavailable",
            message: r.error ?? "agent not connected to any node",
          },
        }, 503);
      }
      return c.json({ message_id: r.messageId, status: r.status });
    } catch (err) {
      return refused(err);
    }
  });

  peers.post("/wake", "node", async (c) => {
    const body = await readJson(c, wakeSchema);
    if (body instanceof Response) return body;
    return c.json({ results: await gateway.wakeLocal(body.items) });
  });

  peers.post("/push", "node", async (c) => {
    const body = await readJson(c, pushSchema);
    if (body instanceof Response) return body;
    return c.json({ results: await gateway.pushLocal(body.items) });
  });

  peers.post("/kick", "node", async (c) => {
    const body = await readJson(c, kickSchema);
    if (body instanceof Response) return body;
    const conn = gateway.kickLocal(
      body.agentId,
      body.session,
      body.code,
      body.reason,
    );
    return c.json({ closed: conn !== undefined });
  });
}
