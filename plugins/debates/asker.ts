/**
 * Asking a debate participant's agent wherever it is connected: on this
 * node's gateway, or through the node its presence record names (a
 * node-signed `POST /api/v1/debates/ask` that asks on that node's gateway).
 * A capability picks from every live agent offering it on any node, sorted by
 * id, so a step re-run on another node asks the same agent.
 *
 * @module
 */
import type { NodeFetch } from "../../core/plugin.ts";
import {
  type AgentGateway,
  GatewayRequestError,
} from "../../gateway/gateway.ts";
import { isLive, type PresenceStore } from "../../gateway/presence.ts";
import { DebateAskError } from "./engine.ts";
import type { Participant } from "./store.ts";

/** The backend channel an agent named by id is asked on. */
export const DEBATE_CHANNEL = "tasks.debate";

/** What {@linkcode createAgentAsker} needs. */
export interface AgentAskerDeps {
  gateway: AgentGateway;
  /** The gateway's presence records (which node holds each agent). */
  presence: PresenceStore;
  /** This node's id. */
  nodeId: string;
  /** Signed fetch to other nodes (`ctx.nodeFetch`). */
  nodeFetch: NodeFetch;
}

/** The asker. */
export interface AgentAsker {
  /** Asks the agent behind `participant` (slot -1: the moderator); throws a DebateAskError. */
  ask(
    participant: Participant,
    slot: number,
    request: unknown,
    timeoutMs: number,
  ): Promise<{ agent: string; answer: unknown }>;
  /** Asks an agent connected to this node; throws a DebateAskError. */
  askHere(
    agent: string,
    channel: string,
    request: unknown,
    timeoutMs: number,
  ): Promise<unknown>;
  /** Live agents on any node subscribed to `channel`, sorted by id. */
  offering(channel: string): Promise<string[]>;
}

/**
 * Creates the asker.
 *
 * @example Usage
 * ```ts ignore
 * const asker = createAgentAsker({ gateway, presence: createPresence(kv), nodeId: ctx.node.id, nodeFetch: ctx.nodeFetch });
 * const { agent, answer } = await asker.ask({ ref: "debate", kind: "capability" }, 0, question, 5000);
 * ```
 */
export function createAgentAsker(deps: AgentAskerDeps): AgentAsker {
  const { gateway, presence } = deps;

  const offering = async (channel: string): Promise<string[]> => {
    const now = Date.now();
    const out: string[] = [];
    for await (const p of presence.list()) {
      if (isLive(p, now) && p.channels.includes(channel)) out.push(p.agentId);
    }
    return out.sort();
  };

  const askHere = async (
    agent: string,
    channel: string,
    request: unknown,
    timeoutMs: number,
  ): Promise<unknown> => {
    try {
      return await gateway.request(agent, channel, request, { timeoutMs });
    } catch (err) {
      const why = err instanceof GatewayRequestError
        ? `${err.code}: ${err.message}`
        : (err as Error)?.message ?? String(err);
      throw new DebateAskError(why, agent, { cause: err });
    }
  };

  const askThere = async (
    where: { nodeId: string; address: string },
    agent: string,
    channel: string,
    request: unknown,
    timeoutMs: number,
  ): Promise<unknown> => {
    let res: Response;
    try {
      res = await deps.nodeFetch(
        new URL("/api/v1/debates/ask", where.address),
        {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ agent, channel, request, timeoutMs }),
          signal: AbortSignal.timeout(timeoutMs + 5000),
        },
      );
    } catch (err) {
      throw new DebateAskError(
        `node ${where.nodeId} (${where.address}) did not answer: ${
          (err as Error).message
        }`,
        agent,
        { cause: err },
      );
    }
    const json = await res.json().catch(() => ({})) as {
      answer?: unknown;
      error?: { message?: string };
    };
    if (!res.ok) {
      throw new DebateAskError(
        `node ${where.nodeId}: ${json.error?.message ?? res.status}`,
        agent,
      );
    }
    return json.answer;
  };

  return {
    askHere,
    offering,
    async ask(p, slot, request, timeoutMs) {
      let agent = p.ref;
      let channel = DEBATE_CHANNEL;
      if (p.kind === "capability") {
        channel = `tasks.${p.ref}`;
        const pool = [
          ...new Set([
            ...gateway.capabilities()[p.ref] ?? [],
            ...await offering(channel),
          ]),
        ].sort();
        if (pool.length === 0) {
          throw new DebateAskError(
            `no agent offering capability '${p.ref}' is connected to any node`,
          );
        }
        agent = pool[Math.max(slot, 0) % pool.length];
      }
      const where = await presence.get(agent);
      const remote = where && isLive(where, Date.now()) &&
        where.nodeId !== deps.nodeId;
      return {
        agent,
        answer: remote
          ? await askThere(where, agent, channel, request, timeoutMs)
          : await askHere(agent, channel, request, timeoutMs),
      };
    },
  };
}
