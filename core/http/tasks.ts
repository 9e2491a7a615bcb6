/**
 * `POST /api/v1/tasks`, `GET /api/v1/tasks/{id}`,
 * `POST /api/v1/tasks/{id}/cancel` (`tasks:write`) and the dead letters:
 * `GET /api/v1/tasks/dead` (`tasks:read`), `POST /api/v1/tasks/dead/{id}/replay`
 * and `POST /api/v1/tasks/dead/purge` (`queues:write`, operator).
 *
 * @module
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import {
  type TaskBody,
  TaskCancelError,
  TaskInputError,
  type TaskService,
} from "../tasks.ts";
import type { QueueMessage } from "../state/queue.ts";
import { errorResponse, plexusErrorResponse } from "./errors.ts";
import { readJson } from "./json.ts";
import { Kind, span } from "../observe/otel.ts";
import { requireNodeSignature, requirePermission } from "./auth.ts";

/** Largest accepted request body; a queue message must fit one 64 KiB KV value. */
export const TASK_BODY_LIMIT = 60 * 1024;

const submission = z.strictObject({
  type: z.string().min(1).max(64),
  payload: z.unknown().optional(),
  key: z.string().min(1).max(256).optional(),
  priority: z.number().int().min(0).max(9).optional(),
  idempotencyKey: z.string().min(1).max(256).optional(),
  capability: z.string().min(1).max(64).optional(),
});

const cancelBody = z.strictObject({
  reason: z.string().min(1).max(1024).optional(),
});

const deadQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});
const purgeBody = z.strictObject({
  /** Only these dead letters; all of them (up to 1000) when absent. */
  ids: z.array(z.string().min(1).max(128)).max(1000).optional(),
});

/** One dead letter as `GET /api/v1/tasks/dead` lists it. */
export interface DeadLetterView {
  id: string;
  type: string;
  attempts: number;
  /** ISO 8601. */
  enqueuedAt: string;
  /** ISO 8601. */
  deadAt: string | null;
  reason: string | null;
  /** The last attempt's error. */
  lastError: string | null;
}

function deadLetterView(m: QueueMessage<TaskBody>): DeadLetterView {
  return {
    id: m.id,
    type: m.payload.type,
    attempts: m.attempts,
    enqueuedAt: new Date(m.enqueuedAt).toISOString(),
    deadAt: m.deadAt === undefined ? null : new Date(m.deadAt).toISOString(),
    reason: m.deadReason ?? null,
    lastError: m.errors.at(-1)?.error ?? null,
  };
}

/** Routes for tasks, to mount at `/api/v1/tasks`. */
export function taskRoutes(tasks: TaskService): Hono {
  const app = new Hono();
  app.post(
    "/",
    requirePermission("tasks:write"),
    bodyLimit({
      maxSize: TASK_BODY_LIMIT,
      onError: () =>
        errorResponse(413, `request body over ${TASK_BODY_LIMIT} bytes`),
    }),
    async (c) => {
      const body = await readJson(c, submission);
      if (body instanceof Response) return body;
      try {
        const r = await tasks.submit(body);
        return c.json(
          { id: r.id, status: r.status },
          r.deduplicated ? 200 : 202,
        );
      } catch (err) {
        if (err instanceof TaskInputError) return plexusErrorResponse(err);
        throw err;
      }
    },
  );
  app.get("/dead", requirePermission("tasks:read"), async (c) => {
    const q = deadQuery.safeParse(c.req.query());
    if (!q.success) {
      return errorResponse(400, `limit: ${q.error.issues[0].message}`);
    }
    const dead = await tasks.queue.dlq({ limit: q.data.limit ?? 100 });
    return c.json(dead.map(deadLetterView));
  });
  app.post(
    "/dead/purge",
    requirePermission("queues:write"),
    async (c) => {
      const body = await readJson(c, purgeBody);
      if (body instanceof Response) return body;
      return c.json({ purged: await tasks.queue.purge(body.ids) });
    },
  );
  app.post(
    "/dead/:id/replay",
    requirePermission("queues:write"),
    async (c) => {
      const id = c.req.param("id");
      if (!await tasks.queue.replay(id)) {
        return errorResponse(
          (await tasks.queue.get(id)) ? 409 : 404,
          `task '${id}' is not a dead letter`,
        );
      }
      return c.json({ id, status: "ready" });
    },
  );
  app.post(
    "/:id/cancel",
    requirePermission("tasks:write"),
    bodyLimit({
      maxSize: 4096,
      onError: () => errorResponse(413, "request body over 4096 bytes"),
    }),
    async (c) => {
      // The body is optional: no body cancels without a reason.
      const body = (await c.req.text()).trim() === ""
        ? {}
        : await readJson(c, cancelBody);
      if (body instanceof Response) return body;
      try {
        return c.json(await tasks.cancel(c.req.param("id"), body.reason));
      } catch (err) {
        if (err instanceof TaskCancelError) return plexusErrorResponse(err);
        throw err;
      }
    },
  );
  app.get("/:id", requirePermission("tasks:read"), async (c) => {
    const view = await tasks.get(c.req.param("id"));
    return view
      ? c.json(view)
      : errorResponse(404, `no task '${c.req.param("id")}'`);
  });
  return app;
}

const routedRun = z.strictObject({
  id: z.string().min(1).max(128),
  type: z.string().min(1).max(64),
  payload: z.unknown(),
  key: z.string().min(1).max(256).optional(),
  capability: z.string().min(1).max(64).optional(),
  attempt: z.number().int().min(1).max(1000),
});

/**
 * `POST /run` (mount at `/api/v1/cluster/tasks`): another node routed a
 * claimed task here (`core/task_router.ts`). Node signatures only. 200
 * `{result}`; 422 `{error}` when the handler failed or this node has no
 * handler for the type (the caller fails that attempt).
 */
export function clusterTaskRoutes(tasks: TaskService): Hono {
  const app = new Hono();
  app.post(
    "/run",
    requireNodeSignature,
    bodyLimit({
      maxSize: TASK_BODY_LIMIT + 1024,
      onError: () =>
        errorResponse(413, `request body over ${TASK_BODY_LIMIT} bytes`),
    }),
    async (c) => {
      const body = await readJson(c, routedRun);
      if (body instanceof Response) return body;
      try {
        // OTel on: a span of the run on this node, under the route's span
        // (which continues the routing node's trace).
        const result = await span(
          "task.run",
          {
            "plexus.task.id": body.id,
            "plexus.task.type": body.type,
            "plexus.task.routed": true,
          },
          () => tasks.runHere(body),
          { kind: Kind.CONSUMER },
        );
        return c.json({ result: result ?? null });
      } catch (err) {
        return errorResponse(422, (err as Error).message ?? String(err));
      }
    },
  );
  return app;
}
