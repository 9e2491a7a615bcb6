/**
 * The service-call contract (docs/services.md): what a plugin sees as
 * `ctx.services` — `define` an action, `call` one anywhere in the cluster,
 * `list` what is offered — and the zod schemas of names and call options.
 *
 * @example Usage
 * ```ts ignore
 * ctx.services.define("orders.create", z.strictObject({ sku: z.string() }),
 *   async ({ sku }, call) => ({ id: crypto.randomUUID(), sku, by: call.caller }));
 * const order = await ctx.services.call("orders.create", { sku: "a-1" },
 *   { timeout: 2000, retries: 2, key: "customer-7" });
 * ```
 *
 * @module
 */
import { z } from "zod";
import type * as npm from "../_npm_types.ts";
import type { Permission } from "../security/roles.ts";

/**
 * An action name: two or more dot-separated segments of letters, digits,
 * `_` and `-` (`orders.create`, `billing.invoice.send`), at most 128
 * characters.
 */
export const ACTION_NAME_RE = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$/;

/** Zod schema of an action name. */
export const actionNameSchema: npm.ZodType<string> = z.string().max(128)
  .regex(
    ACTION_NAME_RE,
    "expected dot-separated segments like 'orders.create'",
  );

/** Options of one {@linkcode Services.call}. */
export interface CallOptions {
  /** Longest wait for the answer, every retry included, ms. @default {10000} */
  timeout?: number;
  /**
   * Further attempts after a retryable failure (node gone before it
   * answered, open circuit, a retryable error the action threw), each on
   * another node where one offers the action, after a jittered backoff.
   * A retried call may have run on the node that failed: make such
   * actions idempotent. @default {0}
   */
  retries?: number;
  /** Run on this node only (no balancing, no retry elsewhere). */
  nodeId?: string;
  /** Affinity key: calls with one key go to one node (consistent hash). */
  key?: string;
  /** Carried to the handler and on to its own calls. @default {the trace id} */
  correlationId?: string;
  /** W3C `traceparent` of the caller's span; the call is a child span. */
  traceparent?: string;
}

/** Zod schema of {@linkcode CallOptions} (what the HTTP route accepts too). */
export const callOptionsSchema: npm.ZodType<CallOptions> = z.strictObject({
  timeout: z.number().int().positive().max(600_000).optional(),
  retries: z.number().int().min(0).max(10).optional(),
  nodeId: z.string().min(1).max(128).optional(),
  key: z.string().max(1024).optional(),
  correlationId: z.string().min(1).max(128).optional(),
  traceparent: z.string().regex(
    /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/,
    "expected a W3C traceparent like '00-<32 hex>-<16 hex>-01'",
  ).optional(),
});

/** What an action's handler gets beside its params. */
export interface ActionCall {
  /** The action's name. */
  action: string;
  /** The node the call came from. */
  caller: string;
  /** The call's correlation id (the caller's, else the trace id). */
  correlationId: string;
  /** This call's W3C `traceparent` (its own span under the caller's). */
  traceparent: string;
  /** The caller's API role when the call came through the HTTP route. */
  role?: string;
  /** Calls another action with this call's correlation id and as a child span. */
  call<R = unknown>(
    action: string,
    params: unknown,
    options?: CallOptions,
  ): Promise<R>;
}

/** Runs one call of an action; the resolved value is the answer (JSON). */
export type ActionHandler<P = unknown, R = unknown> = (
  params: P,
  call: ActionCall,
) => R | Promise<R>;

/** Options of {@linkcode Services.define}. */
export interface ActionOptions {
  /**
   * Permission a caller through `POST /api/v1/services/{action}` needs,
   * checked on the node that runs the action. @default {"tasks:write"}
   */
  permission?: Permission;
  /** One line for `GET /api/v1/services`. */
  description?: string;
}

/** One action as `list` and `GET /api/v1/services` show it. */
export interface ActionInfo {
  /** The action's name. */
  name: string;
  /** Nodes offering it that this node can reach now, sorted. */
  nodes: string[];
  /** Defined on this node: by which plugin. */
  plugin?: string;
  /** Defined on this node: its HTTP permission. */
  permission?: Permission;
  /** Defined on this node: its description. */
  description?: string;
}

/** What a plugin sees as `ctx.services`. */
export interface Services {
  /**
   * Offers `name` on this node: params are checked with `schema` (on the
   * node that runs it; a refusal is a `ServiceError` coded
   * `invalid_params`), then `handler` runs. Throws if another plugin
   * defines the name on this node. The action goes away when the plugin
   * copy that defined it stops or is replaced. Resolves once the nodes
   * linked now know the action.
   */
  define<S extends npm.ZodType>(
    name: string,
    schema: S,
    handler: ActionHandler<npm.ZodOutput<S>>,
    options?: ActionOptions,
  ): Promise<void>;
  /**
   * Calls `name` on a node offering it (this one without serialising when
   * it offers it, else one the balancer picks) and resolves with the
   * answer. Errors keep their type across nodes; see {@linkcode CallOptions}.
   */
  call<R = unknown>(
    name: string,
    params: unknown,
    options?: CallOptions,
  ): Promise<R>;
  /** Every action offered on a reachable node, with its nodes, by name. */
  list(): Promise<ActionInfo[]>;
}
