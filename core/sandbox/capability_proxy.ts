/**
 * Capabilities across the sandbox boundary: a plugin's `running.api` is
 * seen from the other side as an object with the same method names, each
 * an async call (arguments and results by structured clone). Used both
 * ways: a sandboxed plugin's `kernel.get` of a capability the node's
 * plugins provide, and the node's `kernel.get` of one a sandboxed plugin
 * provides.
 *
 * What cannot cross: the raw KV (`state:kv`) and the node's key
 * (`node:key`), and the contracts of transports, consensus and balancers,
 * whose methods are synchronous and on the node's hot path (a leader check
 * cannot wait for a round trip).
 *
 * @module
 */
import { PlexusError } from "../errors.ts";

/** Capabilities a sandboxed plugin never gets, only a trusted one. */
export const TRUSTED_ONLY: readonly string[] = ["state:kv", "node:key"];

/** Plugin kinds whose contract is synchronous: they run trusted only. */
export const SYNCHRONOUS_KINDS: readonly string[] = [
  "transport",
  "consensus",
  "balancer",
];

/**
 * Why `capability` cannot cross the sandbox, or `undefined` when it can.
 *
 * @example Usage
 * ```ts
 * import { refusal } from "./capability_proxy.ts";
 * import assert from "node:assert/strict";
 * assert.equal(refusal("extension:calc"), undefined);
 * assert.match(refusal("consensus:*")!, /synchronous/);
 * ```
 */
export function refusal(capability: string): string | undefined {
  if (TRUSTED_ONLY.includes(capability)) {
    return `capability '${capability}' is not available to a sandboxed plugin (run it trusted, see docs/sandbox.md)`;
  }
  const kind = capability.slice(0, capability.indexOf(":"));
  if (SYNCHRONOUS_KINDS.includes(kind)) {
    return `capability '${capability}': the ${kind} contract is synchronous and on the node's hot path, so it cannot be called across the sandbox (run the plugin trusted, see docs/sandbox.md)`;
  }
}

/**
 * The names of the methods of `api` (own and inherited, not `Object`'s),
 * sorted; empty when it is not an object.
 *
 * @example Usage
 * ```ts
 * import { methodNames } from "./capability_proxy.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(methodNames({ add: (a: number) => a, n: 1 }), ["add"]);
 * ```
 */
export function methodNames(api: unknown): string[] {
  const names = new Set<string>();
  if (api === null || (typeof api !== "object" && typeof api !== "function")) {
    return [];
  }
  for (
    let o: object | null = api as object;
    o && o !== Object.prototype && o !== Function.prototype;
    o = Object.getPrototypeOf(o)
  ) {
    for (const key of Object.getOwnPropertyNames(o)) {
      if (key === "constructor" || key === "then") continue;
      const d = Object.getOwnPropertyDescriptor(o, key);
      if (typeof d?.value === "function") names.add(key);
    }
  }
  return [...names].sort();
}

/**
 * An object with one async method per name in `methods`, each
 * `call(method, args)`. A function (or another value structured clone
 * refuses) among the arguments or in the result rejects with a
 * `TypeError` naming the method.
 *
 * @example Usage
 * ```ts
 * import { callProxy } from "./capability_proxy.ts";
 * import assert from "node:assert/strict";
 * const api = callProxy("extension:calc", ["add"], (_m, args) =>
 *   Promise.resolve((args as number[])[0] + (args as number[])[1]));
 * assert.equal(await (api.add as (a: number, b: number) => Promise<number>)(2, 3), 5);
 * ```
 */
export function callProxy(
  capability: string,
  methods: readonly string[],
  call: (method: string, args: unknown[]) => Promise<unknown>,
): Record<string, (...args: unknown[]) => Promise<unknown>> {
  const api: Record<string, (...args: unknown[]) => Promise<unknown>> = {};
  for (const method of methods) {
    api[method] = (...args) =>
      call(method, args).catch((err) => {
        throw uncloneable(err, `${capability} ${method}()`) ?? err;
      });
  }
  return api;
}

/** A `TypeError` naming `what` when `err` is a refused structured clone. */
function uncloneable(err: unknown, what: string): TypeError | undefined {
  const e = err as Error & { data?: { remoteName?: unknown } };
  if (e?.name === "DataCloneError") {
    return new TypeError(
      `${what}: an argument cannot cross the sandbox (functions, class instances with private state and streams cannot be cloned): ${e.message}`,
      { cause: err },
    );
  }
  if (e instanceof PlexusError && e.data?.remoteName === "DataCloneError") {
    return new TypeError(
      `${what}: its result cannot cross the sandbox (functions, class instances with private state and streams cannot be cloned): ${e.message}`,
      { cause: err },
    );
  }
}
