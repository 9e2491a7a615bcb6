/**
 * Routes task runs to nodes through the configured balancer and the
 * resilience layer.
 *
 * Every node still claims tasks from the shared durable queue (so a task is
 * never lost with a node: its lease runs out and the leader's sweep puts it
 * back). With a balancer loaded, the claiming node does not simply run the
 * task itself: it picks the node to run it on from the live members that
 * handle the task's type — with the task's `key` as the affinity key, so
 * `consistent-hash` keeps a key on one node — and calls that node
 * (`POST /api/v1/cluster/tasks/run`, signed with its node key), or runs it in
 * place when it picked itself. A task with a `capability` goes to a node
 * with a connected agent offering it (nodes publish their agents'
 * capabilities), where it runs on such an agent. The balancer's circuit breakers drop nodes
 * that keep failing; the call has a timeout (the task lease), and a call
 * that fails before the worker answered (connection refused, a node
 * stopping, an open circuit) is retried at once on another pick. A worker's
 * own error fails the attempt as if it ran locally (the queue's backoff and
 * dead-lettering apply). The claiming node keeps renewing the lease while
 * the call runs.
 *
 * @module
 */
import type { Logger } from "./observe/logger.ts";
import type { MetricsRegistry } from "./observe/metrics.ts";
import type { NodeRecord, Registry } from "./state/registry.ts";
import { memberStatus } from "./state/registry.ts";
import type { NodeFetch } from "./http/node_client.ts";
import type { Balancer, Candidate } from "./contracts/balancer.ts";

/** One run of a task, as routed. */
export interface TaskRun {
  /** The task's id. */
  id: string;
  /** The task type, as registered with `TaskService.register`. */
  type: string;
  /** What was submitted. */
  payload: unknown;
  /** The task's affinity key, if submitted with one (`consistent-hash` keeps a key on one node). */
  key?: string;
  /** Run by an agent offering this capability (see `core/tasks.ts`). */
  capability?: string;
  /** Which run of the task this is, from 1. */
  attempt: number;
}

/** A node as a routing candidate. */
export interface NodeCandidate extends Candidate {
  address: string;
}

/** The task's handler failed on the worker (not a routing failure). */
export class RemoteTaskError extends Error {
  override name = "RemoteTaskError";
  constructor(readonly node: string, message: string) {
    super(message);
  }
}

/** Options for {@linkcode createTaskRouter}. */
export interface TaskRouterOptions {
  nodeId: string;
  balancer: Balancer;
  registry: Pick<Registry, "nodes" | "thresholds">;
  call: NodeFetch;
  /**
   * Whether this node can run `task` (a handler for its type, or a connected
   * agent with its capability); it is then always a candidate.
   */
  handlesHere: (task: TaskRun) => boolean;
  log: Logger;
  metrics: MetricsRegistry;
  /** Longest a remote run may take (the task lease). @default {30000} */
  timeoutMs?: number;
  /** Picks per run when calls fail before the worker answers. @default {3} */
  maxPicks?: number;
  /** How long the member list is reused. @default {500} */
  membersTtlMs?: number;
  /**
   * Membership from the consensus plugin (gossip's failure detector, Raft's
   * links), by node id; where it knows a node, its status decides instead
   * of the registry's heartbeat age.
   */
  memberStatus?: () => Promise<Map<string, "up" | "suspect" | "down">>;
}

/** The router. */
export interface TaskRouter {
  /** Runs `task` on a picked node; `local` runs it here. */
  run(task: TaskRun, local: () => Promise<unknown>): Promise<unknown>;
}

/**
 * Creates a router.
 *
 * @example Usage
 * ```ts ignore
 * const router = createTaskRouter({ nodeId, balancer, registry, call: nodeClient(security), log, metrics });
 * const result = await router.run({ id, type: "echo", payload: 1, attempt: 1 }, () => runHere());
 * ```
 */
export function createTaskRouter(options: TaskRouterOptions): TaskRouter {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const maxPicks = options.maxPicks ?? 3;
  const ttl = options.membersTtlMs ?? 500;
  const routed = options.metrics.counter(
    "plexus_task_routes_total",
    "Task runs routed, by where they ran and outcome",
  );
  let cache:
    | {
      at: number;
      nodes: NodeRecord[];
      status?: Map<string, "up" | "suspect" | "down">;
    }
    | undefined;

  const candidates = async (task: TaskRun): Promise<NodeCandidate[]> => {
    const now = Date.now();
    if (!cache || now - cache.at > ttl) {
      const [nodes, status] = await Promise.all([
        options.registry.nodes(),
        options.memberStatus?.().catch(() => undefined),
      ]);
      cache = { at: now, nodes, status };
    }
    const live = (n: NodeRecord) =>
      (cache!.status?.get(n.id) ??
        memberStatus(n, now, options.registry.thresholds)) === "up";
    const list: NodeCandidate[] = cache.nodes
      .filter((n) =>
        n.id !== options.nodeId && live(n) &&
        (task.capability === undefined
          ? (n.meta?.taskTypes as string[] | undefined)?.includes(task.type)
          : (n.meta?.agentCapabilities as string[] | undefined)?.includes(
            task.capability,
          ))
      )
      .map((n) => ({ id: n.id, address: n.address }));
    // This node, whether or not its own heartbeat is out yet.
    if (options.handlesHere(task)) {
      list.push({ id: options.nodeId, address: "" });
    }
    return list.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  };

  const remote = async (node: NodeCandidate, task: TaskRun) => {
    const res = await options.call(
      `${node.address}/api/v1/cluster/tasks/run`,
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(task),
        signal: AbortSignal.timeout(timeoutMs),
      },
    );
    const body = await res.json().catch(() => null) as
      | { result?: unknown; error?: { message?: string } }
      | null;
    if (res.status === 200) return body?.result ?? null;
    const message = body?.error?.message ?? `HTTP ${res.status}`;
    if (res.status === 422) throw new RemoteTaskError(node.id, message);
    throw new Error(`node ${node.id} answered ${res.status}: ${message}`);
  };

  return {
    async run(task, local) {
      const tried = new Set<string>();
      let lastError: unknown;
      for (let pick = 0; pick < maxPicks; pick++) {
        const all = await candidates(task);
        const fresh = all.filter((c) => !tried.has(c.id));
        const node = options.balancer.pick(
          fresh.length ? fresh : all,
          task.key ? { key: task.key } : undefined,
        );
        if (!node) break;
        tried.add(node.id);
        const here = node.id === options.nodeId;
        const start = performance.now();
        try {
          const result = here ? await local() : await remote(node, task);
          options.balancer.report(node.id, {
            ok: true,
            latencyMs: performance.now() - start,
          });
          routed.inc({ target: here ? "local" : "remote", outcome: "ok" });
          return result;
        } catch (err) {
          options.balancer.report(node.id, {
            ok: false,
            latencyMs: performance.now() - start,
          });
          routed.inc({
            target: here ? "local" : "remote",
            outcome: "failed",
          });
          // The handler ran and failed: that attempt counts; no re-pick.
          if (here || err instanceof RemoteTaskError) throw err;
          lastError = err;
          options.log.warn("task run could not reach its node", {
            task: task.id,
            node: node.id,
            error: err,
          });
        }
      }
      if (lastError) throw lastError;
      throw new Error(
        task.capability === undefined
          ? `no live node handles task type '${task.type}' (or every circuit is open)`
          : `no live node has an agent offering capability '${task.capability}' (or every circuit is open)`,
      );
    },
  };
}
