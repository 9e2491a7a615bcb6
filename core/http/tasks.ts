/**
 * `POST /api/v1/tasks` and `GET /api/v1/tasks/{id}`.
 *
 * @module
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import { describeIssues } from "../plugin.ts";
import { TaskInputError, type TaskService } from "../tasks.ts";
import { errorResponse } from "./errors.ts";

/** Largest accepted request body; a queue message must fit one 64 KiB KV value. */
export const TASK_BODY_LIMIT = 60 * 1024;

const submission = z.strictObject({
  type: z.string().min(1).max(64),
  payload: z.unknown().optional(),
  key: z.string().min(1).max(256).optional(),
  priority: z.number().int().min(0).max(9).optional(),
  idempotencyKey: z.string().min(1).max(256).optional(),
});

/** Nesting deeper than this is refused before validation. */
const MAX_DEPTH = 32;

function depth(v: unknown, d = 0): number {
  if (d > MAX_DEPTH || v === null || typeof v !== "object") return d;
  let max = d;
  for (const x of Object.values(v)) max = Math.max(max, depth(x, d + 1));
  return max;
}

/** Routes for tasks, to mount at `/api/v1/tasks`. */
export function taskRoutes(tasks: TaskService): Hono {
  const app = new Hono();
  app.post(
    "/",
    bodyLimit({
      maxSize: TASK_BODY_LIMIT,
      onError: () =>
        errorResponse(413, `request body over ${TASK_BODY_LIMIT} bytes`),
    }),
    async (c) => {
      let body: unknown;
      try {
        body = JSON.parse(await c.req.text());
      } catch (err) {
        return errorResponse(
          400,
          `body is not JSON: ${(err as Error).message}`,
        );
      }
      if (depth(body) > MAX_DEPTH) {
        return errorResponse(400, `body nests deeper than ${MAX_DEPTH} levels`);
      }
      const parsed = submission.safeParse(body);
      if (!parsed.success) {
        return errorResponse(400, describeIssues(parsed.error, body));
      }
      try {
        const r = await tasks.submit(parsed.data);
        return c.json(
          { id: r.id, status: r.status },
          r.deduplicated ? 200 : 202,
        );
      } catch (err) {
        if (err instanceof TaskInputError) {
          return errorResponse(400, err.message);
        }
        throw err;
      }
    },
  );
  app.get("/:id", async (c) => {
    const view = await tasks.get(c.req.param("id"));
    return view
      ? c.json(view)
      : errorResponse(404, `no task '${c.req.param("id")}'`);
  });
  return app;
}
