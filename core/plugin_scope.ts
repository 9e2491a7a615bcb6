/**
 * What one running copy of a plugin holds in the node, so that a new copy
 * can take its place without a request or message being lost (hot swap,
 * docs/sandbox.md): a {@linkcode Scope} that says whether the copy is live
 * and counts its work in flight, the router as that copy sees it (its
 * handlers hear messages only while it is live), and the task service as it
 * sees it (task types stay registered once; each run goes to the live
 * copy's handler).
 *
 * Swapping is one synchronous step: the old copy's scope goes dark and the
 * new one's live, so every message published before it reaches the old copy
 * and every one after it the new copy. The old copy's work already running
 * finishes; {@linkcode Scope.idle} says when.
 *
 * @module
 */
import type { Router, TopicHandler } from "./router.ts";
import type { TaskHandler, TaskService } from "./tasks.ts";

/** One copy of a plugin: whether it is live and how much of its work runs. */
export interface Scope {
  /** Whether router messages and task runs reach this copy. */
  live: boolean;
  /** Requests, router handlers and task runs of this copy still running. */
  readonly inflight: number;
  /** Counts `work` as this copy's until it settles. */
  track<T>(work: () => T): T;
  /** Resolves when nothing of this copy runs, or after `ms`; true when idle. */
  idle(ms: number): Promise<boolean>;
  /** Removes every router subscription this copy made (a failed or stopped copy). */
  unsubscribeAll(): void;
  /** @internal Subscriptions to remove with {@linkcode Scope.unsubscribeAll}. */
  readonly subscriptions: Set<() => void>;
}

/**
 * A new copy's scope: `live` at once for a plugin starting with the node,
 * dark until the swap for a replacement.
 *
 * @example Usage
 * ```ts
 * import { createScope } from "./plugin_scope.ts";
 * const scope = createScope(true);
 * await scope.track(() => Promise.resolve(1));
 * console.log(scope.inflight); // 0
 * ```
 */
export function createScope(live: boolean): Scope {
  let inflight = 0;
  const waiters = new Set<() => void>();
  const settle = () => {
    if (--inflight === 0) {
      for (const w of waiters) w();
      waiters.clear();
    }
  };
  const scope: Scope = {
    live,
    get inflight() {
      return inflight;
    },
    subscriptions: new Set(),
    track<T>(work: () => T): T {
      inflight++;
      let result: T;
      try {
        result = work();
      } catch (err) {
        settle();
        throw err;
      }
      if (result instanceof Promise) {
        return result.finally(settle) as T;
      }
      settle();
      return result;
    },
    idle(ms) {
      if (inflight === 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          resolve(true);
        };
        const timer = setTimeout(() => {
          waiters.delete(done);
          resolve(false);
        }, ms);
        waiters.add(done);
      });
    },
    unsubscribeAll() {
      for (const off of scope.subscriptions) off();
      scope.subscriptions.clear();
    },
  };
  return scope;
}

/**
 * The router as one copy of a plugin sees it: its handlers run only while
 * its scope is live, and each run counts as its work. Requests and publishes
 * pass straight through (a reply to a request the old copy made still
 * reaches it after the swap).
 *
 * @example Usage
 * ```ts
 * import { createRouter } from "./router.ts";
 * import { createScope, scopeRouter } from "./plugin_scope.ts";
 * const scope = createScope(false);
 * const seen: unknown[] = [];
 * scopeRouter(createRouter(), scope).subscribe("a", (p) => void seen.push(p));
 * ```
 */
export function scopeRouter(router: Router, scope: Scope): Router {
  return {
    subscribe(pattern: string, handler: TopicHandler) {
      const off = router.subscribe(
        pattern,
        (payload, topic, replyTo) =>
          scope.live
            ? scope.track(() => handler(payload, topic, replyTo))
            : undefined,
      );
      const unsubscribe = () => {
        scope.subscriptions.delete(unsubscribe);
        off();
      };
      scope.subscriptions.add(unsubscribe);
      return unsubscribe;
    },
    publish: (topic, payload, replyTo) =>
      router.publish(topic, payload, replyTo),
    request: (topic, payload, options) =>
      router.request(topic, payload, options),
  };
}

/** Which copy of which plugin runs a task type registered through a scope. */
export type TaskSlots = Map<
  string,
  { plugin: string; scope: Scope; handler: TaskHandler }
>;

/**
 * The task service as one copy of plugin `plugin` sees it: the first copy's
 * `register` adds the type to the service with a handler that runs the live
 * copy's; a replacement registering the same type stages its handler, which
 * takes over when {@linkcode promoteTasks} runs at the swap.
 *
 * @example Usage
 * ```ts ignore
 * const tasks = scopeTasks(service, { slots, plugin: "reports", scope, staged });
 * tasks.register("report.build", handler);
 * ```
 */
export function scopeTasks(
  tasks: TaskService,
  options: {
    /** Every scoped registration of the node, by task type. */
    slots: TaskSlots;
    /** The plugin's name. */
    plugin: string;
    /** This copy's scope. */
    scope: Scope;
    /** Where a replacement's handlers wait for the swap. */
    staged: Map<string, TaskHandler>;
  },
): TaskService {
  const { slots, plugin, scope, staged } = options;
  return {
    ...tasks,
    register(type, handler, schema) {
      const slot = slots.get(type);
      if (slot && slot.plugin === plugin && slot.scope !== scope) {
        if (staged.has(type)) {
          throw new Error(
            `Cannot register task type '${type}': it is registered already`,
          );
        }
        staged.set(type, handler);
        return;
      }
      tasks.register(type, (payload, ctx) => {
        const current = slots.get(type)!;
        return current.scope.track(() => current.handler(payload, ctx));
      }, schema);
      slots.set(type, { plugin, scope, handler });
    },
  };
}

/** Hands the task types `staged` by a replacement to its scope (the swap). */
export function promoteTasks(
  slots: TaskSlots,
  scope: Scope,
  staged: Map<string, TaskHandler>,
): void {
  for (const [type, handler] of staged) {
    slots.set(type, { plugin: slots.get(type)!.plugin, scope, handler });
  }
}
