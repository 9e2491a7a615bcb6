/**
 * Plugin routes under `/api/v1/{prefix}`: a plugin claims a prefix with
 * `ctx.api(prefix)` and declares each route with the permission it needs.
 * The node's app answers them behind the same chain as its own `/api/v1`
 * routes (per-IP limit, audit, authentication, per-principal limit), then
 * checks the declared permission, and the handler reads the verified caller
 * as `c.var.principal`.
 *
 * @module
 */
import { Hono } from "hono";
import type { HonoContext } from "../_npm_types.ts";
import type { Permission } from "../security/roles.ts";
import {
  nodeSignatureRefusal,
  permissionRefusal,
  type Principal,
} from "./auth.ts";

/**
 * First path segments under `/api/v1` that the node's own routes use; no
 * plugin may claim them (a test keeps this list equal to the app's routes).
 */
export const CORE_API_PREFIXES: readonly string[] = [
  "audit",
  "auth",
  "cluster",
  "keys",
  "plugins",
  "services",
  "tasks",
];

const PREFIX_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/**
 * The Hono environment of plugin API routes: the verified caller, and the
 * path to route by when the node hands a request over under another path
 * (`POST /send/prompt` is `/api/v1/prompts`).
 */
export type ApiEnv = {
  Bindings: {
    principal?: Principal;
    path?: string;
    /** Set by the app once answered: the pattern of the route that answered (a metrics label). */
    route?: string;
  };
  Variables: { principal: Principal };
};

/** Hono's own path of a request. */
const honoPath = new Hono().getPath;

/** What a plugin API handler gets: `c.var.principal` is the verified caller. */
export type ApiContext<P extends string = string> = HonoContext<ApiEnv, P>;

/** Answers one plugin API route. */
export type ApiHandler<P extends string = string> = (
  c: ApiContext<P>,
) => Response | Promise<Response>;

/**
 * Who may call a route: callers holding a permission (`"agents:read"`), or
 * `"node"`: only another node of the cluster, proven by its request
 * signature (what `ctx.nodeFetch` sends).
 */
export type ApiAccess = Permission | "node";

/** Adds one route: `path` under the prefix, answered only with `access`. */
export type ApiMethod = <P extends string>(
  path: P,
  access: ApiAccess,
  handler: ApiHandler<P>,
) => ApiRoutes;

/**
 * The routes a plugin serves under `/api/v1/{prefix}`, returned by
 * `ctx.api(prefix)`. Each method adds a route and returns the same object.
 *
 * @example Usage
 * ```ts ignore
 * ctx.api("notes")
 *   .get("/:id", "tasks:read", (c) => c.json({ id: c.req.param("id") }))
 *   .put("/:id", "tasks:write", (c) => c.json({ by: c.var.principal.sub }));
 * ```
 */
export interface ApiRoutes {
  /** The claimed prefix (`notes` serves `/api/v1/notes/...`). */
  readonly prefix: string;
  /** Adds a `GET` (and `HEAD`) route. */
  get: ApiMethod;
  /** Adds a `POST` route. */
  post: ApiMethod;
  /** Adds a `PUT` route. */
  put: ApiMethod;
  /** Adds a `PATCH` route. */
  patch: ApiMethod;
  /** Adds a `DELETE` route. */
  delete: ApiMethod;
}

/** A plugin's claimed prefix: the routes it hands out and the app serving them. */
export interface PluginApi {
  routes: ApiRoutes;
  /** Serves `/api/v1/{prefix}/...`; `env.principal` is the verified caller. */
  app: Hono<ApiEnv>;
}

/**
 * Checks `prefix` and builds the app that serves it.
 *
 * @example Usage
 * ```ts
 * import { createPluginApi } from "./plugin_api.ts";
 * import assert from "node:assert/strict";
 * const { routes, app } = createPluginApi("notes");
 * routes.get("/me", "tasks:read", (c) => c.json({ sub: c.var.principal.sub }));
 * const res = await app.request("/api/v1/notes/me", {}, {
 *   principal: { sub: "ci", role: "viewer", via: "jwt", keyid: "k" },
 * });
 * assert.deepEqual(await res.json(), { sub: "ci" });
 * ```
 */
export function createPluginApi(prefix: string): PluginApi {
  if (!PREFIX_RE.test(prefix)) {
    throw new TypeError(
      `Cannot serve /api/v1/${prefix}: a prefix is one lower-case path segment like 'raft' (got '${prefix}')`,
    );
  }
  const app = new Hono<ApiEnv>({
    // `env.path` routes a request handed over under another path without
    // copying it (a copied Request cost ~50 µs of CPU a call).
    getPath: (req, options) =>
      (options?.env as ApiEnv["Bindings"] | undefined)?.path ?? honoPath(req),
  }).basePath(`/api/v1/${prefix}`);
  const method = (name: "get" | "post" | "put" | "patch" | "delete") => {
    const add: ApiMethod = (path, access, handler) => {
      // The caller, the access check and the route label in the handler,
      // not in middleware before it: with one route matching, Hono calls
      // the handler without its compose chain (a call and a promise a layer).
      // This handler's pattern, read once: Hono's routePath getter builds
      // an array of the matched routes on every read.
      let pattern: string | undefined;
      app[name](path, (c) => {
        const env = c.env;
        const p = env?.principal;
        if (env) {
          // The route that answered, for the node's metrics: from this
          // match, not a second one.
          env.route = pattern ??= c.req.routePath;
          if (p) c.set("principal", p);
        }
        // No principal means the app's auth chain did not run: refused.
        const refused = permissionRefusal(
          p,
          access === "node" ? "admin" : access,
        ) ?? (access === "node" ? nodeSignatureRefusal(p) : undefined);
        return refused ?? handler(c as ApiContext<typeof path>);
      });
      return routes;
    };
    return add;
  };
  const routes: ApiRoutes = {
    prefix,
    get: method("get"),
    post: method("post"),
    put: method("put"),
    patch: method("patch"),
    delete: method("delete"),
  };
  return { routes, app };
}
