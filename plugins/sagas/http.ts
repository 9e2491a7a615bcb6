/**
 * `/api/v1/sagas`: start, list, read and cancel sagas, and read the
 * dead-lettered compensations. Reading needs `tasks:read`, starting and
 * cancelling `tasks:write` (a saga is a bundle of tasks).
 *
 * - `POST /api/v1/sagas` `{definition, input?, id?}`: `definition` is a
 *   registered name or a JSON definition whose steps are task or capability
 *   steps (function steps belong to definitions registered in code). 201
 *   `{id}`; 400 naming the field (`definition.steps[2].run.type: …`).
 * - `GET /api/v1/sagas?status=&limit=&cursor=` → `{sagas, cursor?}`.
 * - `GET /api/v1/sagas/{id}` → the saga: every step's attempts, results
 *   and errors.
 * - `POST /api/v1/sagas/{id}/cancel` `{reason?}` (or `DELETE
 *   /api/v1/sagas/{id}`) → `{cancelled, status}`; 409 when not running.
 * - `GET /api/v1/sagas/dead-letters` → `{deadLetters}`.
 *
 * @module
 */
import type { ApiRoutes } from "../../core/plugin.ts";
import { PlexusError } from "../../core/plugin.ts";
import { plexusErrorResponse } from "../../core/http/errors.ts";
import { SagaDefinitionError } from "./definition.ts";
import type { SagaService, SagaStatus } from "./service.ts";

const STATUSES: readonly SagaStatus[] = [
  "running",
  "compensating",
  "completed",
  "compensated",
  "compensation-failed",
];

/** The JSON body of an error, with `field` for a refused definition. */
function refusal(err: PlexusError): Response {
  if (err instanceof SagaDefinitionError) {
    return Response.json({
      error: { code: err.code, message: err.message, field: err.field },
    }, { status: 400 });
  }
  return plexusErrorResponse(err);
}

async function answer(fn: () => Promise<Response>): Promise<Response> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof PlexusError) return refusal(err);
    throw err;
  }
}

/** Function steps are refused in definitions posted over HTTP. */
function noFunctionSteps(def: unknown) {
  const steps = (def as { steps?: unknown })?.steps;
  if (!Array.isArray(steps)) return;
  const check = (s: unknown, field: string) => {
    for (const part of ["run", "compensate"] as const) {
      const a = (s as Record<string, { kind?: unknown }> | null)?.[part];
      if (a && typeof a === "object" && a.kind === "function") {
        throw new SagaDefinitionError(
          `definition.${field}.${part}.kind`,
          "function steps are for definitions a plugin registers in code; post task or capability steps",
        );
      }
    }
  };
  steps.forEach((s, i) => {
    const group = (s as { parallel?: unknown })?.parallel;
    if (Array.isArray(group)) {
      group.forEach((x, k) => check(x, `steps[${i}].parallel[${k}]`));
    } else check(s, `steps[${i}]`);
  });
}

/**
 * Adds the routes to `routes` (the plugin's `ctx.api("sagas")`).
 *
 * @example Usage
 * ```ts ignore
 * sagaRoutes(ctx.api("sagas"), sagas);
 * ```
 */
export function sagaRoutes(routes: ApiRoutes, sagas: SagaService): void {
  routes
    .post("/", "tasks:write", (c) =>
      answer(async () => {
        let body: { definition?: unknown; input?: unknown; id?: unknown };
        try {
          body = await c.req.json();
        } catch {
          throw new SagaDefinitionError("body", "expected a JSON object");
        }
        if (!body || typeof body !== "object" || Array.isArray(body)) {
          throw new SagaDefinitionError("body", "expected a JSON object");
        }
        const extra = Object.keys(body).find((k) =>
          !["definition", "input", "id"].includes(k)
        );
        if (extra) {
          throw new SagaDefinitionError(
            extra,
            "unknown field (expected definition, input, id)",
          );
        }
        const { definition, input, id } = body;
        if (id !== undefined && typeof id !== "string") {
          throw new SagaDefinitionError("id", "expected a string");
        }
        if (typeof definition === "string") {
          return c.json(
            { id: await sagas.start(definition, { id, input }) },
            201,
          );
        }
        if (!definition || typeof definition !== "object") {
          throw new SagaDefinitionError(
            "definition",
            "expected a registered definition's name or a JSON definition",
          );
        }
        noFunctionSteps(definition);
        try {
          await sagas.check(definition);
        } catch (err) {
          if (err instanceof SagaDefinitionError) {
            throw new SagaDefinitionError(
              `definition.${err.field}`,
              err.message.slice(err.field.length + 2),
            );
          }
          throw err;
        }
        return c.json(
          { id: await sagas.start(definition, { id, input }) },
          201,
        );
      }))
    .get("/", "tasks:read", (c) =>
      answer(async () => {
        const status = c.req.query("status");
        if (status !== undefined && !STATUSES.includes(status as SagaStatus)) {
          throw new SagaDefinitionError(
            "status",
            `expected one of ${STATUSES.join(", ")}, got '${status}'`,
          );
        }
        const rawLimit = c.req.query("limit");
        const limit = rawLimit === undefined ? 100 : Number(rawLimit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
          throw new SagaDefinitionError(
            "limit",
            `expected an integer from 1 to 1000, got '${rawLimit}'`,
          );
        }
        return c.json(
          await sagas.list({
            status: status as SagaStatus | undefined,
            limit,
            cursor: c.req.query("cursor") || undefined,
          }),
        );
      }))
    .get(
      "/dead-letters",
      "tasks:read",
      (c) =>
        answer(async () => c.json({ deadLetters: await sagas.deadLetters() })),
    )
    .get("/:id", "tasks:read", (c) =>
      answer(async () => {
        const s = await sagas.get(c.req.param("id"));
        if (!s) {
          throw new PlexusError(
            "not_found",
            `no saga '${c.req.param("id")}'`,
            { status: 404 },
          );
        }
        return c.json(s);
      }));
  const cancel = (id: string, reason: string | undefined) =>
    answer(async () => {
      const before = await sagas.get(id);
      if (!before) {
        throw new PlexusError("not_found", `no saga '${id}'`, { status: 404 });
      }
      const cancelled = await sagas.cancel(id, reason);
      const status = (await sagas.get(id))!.status;
      if (!cancelled) {
        throw new PlexusError(
          "conflict",
          `saga '${id}' is ${status}, not running: nothing to cancel`,
          { status: 409 },
        );
      }
      return Response.json({ id, cancelled, status });
    });
  routes
    .post("/:id/cancel", "tasks:write", async (c) => {
      let reason: string | undefined;
      const text = await c.req.text();
      if (text) {
        try {
          const r = JSON.parse(text)?.reason;
          if (r !== undefined && typeof r !== "string") throw new Error();
          reason = r?.slice(0, 1024);
        } catch {
          return refusal(
            new SagaDefinitionError("reason", "expected {reason?: string}"),
          );
        }
      }
      return cancel(c.req.param("id"), reason);
    })
    .delete("/:id", "tasks:write", (c) => cancel(c.req.param("id"), undefined))
    .post(
      "/:id/dead-letters/:step/retry",
      "tasks:write",
      (c) =>
        answer(async () => {
          const id = c.req.param("id");
          const step = c.req.param("step");
          await sagas.retryDeadLetter(id, step);
          return c.json({ id, step, status: "compensating" }, 202);
        }),
    );
}
