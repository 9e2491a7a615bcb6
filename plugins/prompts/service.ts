/**
 * The prompt service: one prompt becomes a chain of hops through agents.
 * The node picks a root agent by capability (`prompt.{scenario}` when one is
 * connected here, else `prompt`) with the balancer, sends it the prompt as a
 * sealed gateway request on `tasks.{capability}`, and routes every
 * agent-to-agent ask of that prompt (`agent.{id}.requests.route`) to an
 * agent offering the asked capability. Each hop is logged as a `routing`
 * record (on `WS /ws` and in the answer's `logs`); in SAGE mode each hop's
 * answer must carry a signature by the answering agent's enrolled key
 * (`sdk/sage.ts`), checked as it passes, and one that fails ends the whole
 * prompt with a `sage_verification_failed` error.
 *
 * @example Usage
 * ```ts ignore
 * const service = createPromptService({ gateway, log, config, nodeId, balancer, resolvers });
 * const off = gateway.onRequest("agent.*.requests.route", service.route);
 * const result = await service.answer({ prompt: "Book a room", sage: true, metadata: {} });
 * ```
 *
 * @module
 */
import {
  type Balancer,
  isoNow,
  type Logger,
  PlexusError,
} from "../../core/plugin.ts";
import {
  type AgentGateway,
  type AgentRequest,
  GatewayRequestError,
} from "../../gateway/gateway.ts";
import { Deadlines } from "../../core/resilience/deadlines.ts";
import type { KeyObject } from "node:crypto";
import type { PromptsConfig } from "./config.ts";
import { CAPABILITY_RE } from "./config.ts";
import type { DidResolvers } from "./did.ts";
import { checkHopProof, HopChecker, hopKey } from "./hop_check.ts";
import type { PromptNode } from "./cluster.ts";
import type { PromptInput } from "./input.ts";
import { deleteOldest } from "../../core/oldest.ts";

/** One routing step, as logged (the seed's `routing` log payload). */
export interface RoutingLog {
  type: "routing";
  /** Who sent: `client`, `node:{id}` or an agent id. */
  from: string;
  /** Who received. */
  to: string;
  /** What went, shortened to 200 characters. */
  content: string;
  /** ISO 8601. */
  timestamp: string;
  messageId: string;
  level: "info" | "warn" | "error";
}

/** One verified hop of the SAGE chain. */
export interface ChainLink {
  hop: number;
  capability: string;
  /** The agent that asked (`node:{id}` for the root hop). */
  from: string;
  /** The agent that answered. */
  agent: string;
  agentDid: string;
  /** SHA-256 of the answer, base64url. */
  digest: string;
  /**
   * Ed25519, base64url: over this hop alone (`plexus-sage/v1`), or, with
   * `proof`, over the root of a batch of answers (`plexus-sage/v2`).
   */
  signature: string;
  /** Where this answer sits in its signed batch (`sdk/sage.ts` `decodeHopProof`); only for a batch. */
  proof?: string;
  signatureValid: boolean;
  timestamp: string;
}

/** The `sageVerification` block of an answer. */
export interface SageVerification {
  verified: boolean;
  /** The root agent's DID. */
  agentDid: string;
  signatureValid: boolean;
  timestamp: string;
  chain: ChainLink[];
}

/** What the service answers a prompt with (the seed's shape). */
export interface PromptResult {
  response: string;
  sageVerification?: SageVerification;
  metadata: {
    requestId: string;
    /** Milliseconds from arrival to answer. */
    processingTime: number;
    timestamp: string;
    /** The root agent. */
    agent: string;
    cached: boolean;
    /** Set on an answer served stale (`X-Cache: STALE`), with its age. */
    stale?: boolean;
    ageMs?: number;
    scenario?: string;
    sageEnabled: boolean;
  };
  logs: RoutingLog[];
}

/** Options of one {@linkcode PromptService.answer} call. */
export interface AnswerOptions {
  /** The request id. @default {a random UUID} */
  requestId?: string;
  /** Aborted when the client goes away: the agents working on it are told to stop. */
  signal?: AbortSignal;
  /** Hears each routing record as it is made (streaming answers). */
  onLog?: (entry: RoutingLog) => void;
  /** Hears each piece of an answer an agent streams. */
  onPartial?: (partial: PartialAnswer) => void;
}

/** A piece of an answer, streamed by an agent before its whole answer. */
export interface PartialAnswer {
  hop: number;
  agent: string;
  delta: string;
}

/** The service. */
export interface PromptService {
  /** Answers one checked prompt; throws a {@linkcode PlexusError} with the status to answer. */
  answer(input: PromptInput, options?: AnswerOptions): Promise<PromptResult>;
  /** The gateway handler of `agent.*.requests.route` (agent-to-agent asks). */
  route(req: AgentRequest): Promise<unknown>;
  /** Answers an ask forwarded by node `ask.via` for a prompt answered here. */
  routeRemote(ask: RemoteAsk): Promise<unknown>;
  /**
   * Carries a hop of a prompt node `origin` answers to an agent here
   * offering `capability` (picked by the balancer, never `body.from`); the
   * agent's asks and streamed pieces meanwhile go back to `origin`.
   */
  carry(
    origin: PromptNode,
    capability: string,
    body: Record<string, unknown>,
    timeoutMs: number,
  ): Promise<{ agent: string; answer: unknown }>;
  /**
   * Node `c.via` gave up on prompt `c.requestId` (its client went away):
   * the agents here carrying hops of it are told to stop. How many.
   */
  cancelRemote(c: { requestId: string; via: string }): number;
  /**
   * Takes a piece of an answer agent `agentId` streamed (`{requestId, hop,
   * delta}`): for a prompt answered here, or, for a hop carried here, passed
   * on to the node answering it. False when refused.
   */
  partial(agentId: string, body: unknown): boolean;
  /** Takes pieces forwarded by node `p.via` for a prompt answered here; how many were taken. */
  partialRemote(p: RemotePartial): number;
  /** Root agents connected here for `capability` (the configured one by default). */
  rootAgents(capability?: string): string[];
  /** Prompts being answered now. */
  readonly active: number;
}

/** What {@linkcode createPromptService} needs. */
export interface PromptServiceDeps {
  gateway: AgentGateway;
  log: Logger;
  config: PromptsConfig;
  nodeId: string;
  /** Picks among candidate agents (and hears how each call went). */
  balancer: Balancer;
  resolvers: DidResolvers;
  /** Counted on every failed hop verification. */
  onVerificationFailure?: (agent: string) => void;
  /** Hears each root hop's outcome (latency per agent for /health). */
  onRootOutcome?: (agent: string, ok: boolean, latencyMs: number) => void;
  /** Other nodes' agents, used when none here offers a capability. */
  remote?: RemoteHops;
  /** Checks SAGE hop signatures (a `HopChecker` with its default threshold when absent). */
  checks?: HopChecker;
}

/** Hops to agents connected to other nodes (plugins/prompts/mod.ts wires them to node-to-node calls). */
export interface RemoteHops {
  /** Other live nodes with an agent offering `capability`. */
  nodesFor(capability: string): Promise<PromptNode[]>;
  /**
   * Sends a hop body to an agent offering `capability` on `node`; its
   * answer and which agent gave it. Rejects with a `GatewayRequestError`
   * `unavailable` when the node or its agent went away, a
   * {@linkcode PlexusError} otherwise.
   */
  hop(
    node: PromptNode,
    capability: string,
    body: Record<string, unknown>,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<{ agent: string; answer: unknown }>;
  /** Hands an ask of an agent connected here, for a prompt another node answers, to that node. */
  route(origin: PromptNode, ask: RemoteAsk): Promise<unknown>;
  /** Hands pieces an agent here streamed, for a prompt another node answers, to that node. */
  partial(origin: PromptNode, pieces: RemotePartial): Promise<unknown>;
  /** Tells `node`, carrying hops of prompt `requestId` answered here, to stop its agents. */
  cancel(
    node: PromptNode,
    c: { requestId: string; via: string },
  ): Promise<unknown>;
}

/** Pieces of answers an agent streamed, forwarded (in order) to the node answering the prompt. */
export interface RemotePartial {
  requestId: string;
  agentId: string;
  pieces: { hop: number; delta: string }[];
  /** The node the agent is connected to (the caller, proven by its signature). */
  via: string;
}

/** An agent's ask, forwarded to the node answering its prompt. */
export interface RemoteAsk {
  requestId: string;
  agentId: string;
  capability: string;
  payload: unknown;
  /** The node the agent is connected to (the caller, proven by its signature). */
  via: string;
}

/** A hop this node carries for a prompt another node answers. */
interface Proxied {
  origin: PromptNode;
  agent: string;
  capability: string;
  /** Streamed pieces not yet handed to `origin`, in the order they came. */
  pending: { hop: number; delta: string }[];
  /** The hand-over under way, if any. */
  sending?: Promise<void>;
}

interface Active {
  requestId: string;
  input: PromptInput;
  participants: Set<string>;
  hops: number;
  logs: RoutingLog[];
  chain: ChainLink[];
  signal: AbortSignal;
  deadline: number;
  /** The first hop failure; it fails the prompt whatever the root answers. */
  failure?: PlexusError;
  onLog?: (entry: RoutingLog) => void;
  onPartial?: (partial: PartialAnswer) => void;
  /** Hops sent and not answered yet: agent → capabilities. */
  inflight: Map<string, string[]>;
  /** Rejected when the prompt is aborted (made at the first hop). */
  aborted?: Promise<never>;
  /** Rejects `aborted`. */
  cancel?: () => void;
}

const SHORT = 200;
/** How long an agent's enrolled key is reused for SAGE checks. */
const KEY_CACHE_MS = 5000;

/** Whether `a` and `b` hold the same bytes. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const short = (s: string) => s.length > SHORT ? `${s.slice(0, SHORT)}…` : s;

/** Creates the prompt service. */
export function createPromptService(deps: PromptServiceDeps): PromptService {
  const { gateway, log, config, balancer, resolvers } = deps;
  const self = `node:${deps.nodeId}`;
  const actives = new Map<string, Active>();
  // One timer for every prompt's deadline (a setTimeout each was ~4 µs of
  // a prompt): it fires up to a tick (5 ms) late; each hop's own gateway
  // timeout is exact.
  const deadlines = new Deadlines();
  const checks = deps.checks ?? new HopChecker();

  const routing = (
    a: Active,
    from: string,
    to: string,
    content: string,
    level: RoutingLog["level"] = "info",
  ) => {
    const entry: RoutingLog = {
      type: "routing",
      from,
      to,
      content: short(content),
      timestamp: isoNow(),
      messageId: crypto.randomUUID(),
      level,
    };
    a.logs.push(entry);
    if (log.enabled(level)) {
      log[level]("routing", {
        type: "routing",
        from,
        to,
        content: entry.content,
        timestamp: entry.timestamp,
        messageId: entry.messageId,
        level,
        requestId: a.requestId,
      });
    }
    a.onLog?.(entry);
  };

  const agentsFor = (capability: string): string[] =>
    gateway.capabilities()[capability] ?? [];

  /**
   * Enrolled keys read lately: a re-keyed or removed agent is seen within
   * KEY_CACHE_MS (the gateway itself re-reads enrolments every heartbeat).
   */
  const keys = new Map<
    string,
    { did: string; key: KeyObject; raw: Uint8Array; until: number }
  >();
  /** The DID and imported key an answer of `agentId` must be signed with. */
  const keyOf = async (
    agentId: string,
  ): Promise<{ did: string; key: KeyObject }> => {
    const known = keys.get(agentId);
    if (known && known.until > Date.now()) return known;
    const { did, key: raw } = await readKey(agentId);
    // The key enrolled before, read again: not imported and checked again
    // (~0.45 ms on the event loop, mostly the small-order check).
    const key = known && sameBytes(known.raw, raw) ? known.key : hopKey(raw);
    const found = { did, key, raw, until: Date.now() + KEY_CACHE_MS };
    keys.delete(agentId);
    keys.set(agentId, found);
    if (keys.size > 10_000) deleteOldest(keys);
    return found;
  };
  /** The DID and key an answer of `agentId` must be signed with. */
  const readKey = async (
    agentId: string,
  ): Promise<{ did: string; key: Uint8Array }> => {
    const record = await gateway.get(agentId);
    if (!record) throw new Error(`agent '${agentId}' is not enrolled`);
    const key = Uint8Array.fromBase64(record.publicKey, {
      alphabet: "base64url",
    });
    if (!agentId.startsWith("did:")) return { did: resolvers.didKey(key), key };
    const resolved = await resolvers.resolve(agentId);
    if (
      resolved.length !== key.length || resolved.some((b, i) => b !== key[i])
    ) {
      throw new Error(
        `DID '${agentId}' resolves to a key other than the enrolled one`,
      );
    }
    return { did: agentId, key };
  };

  const failVerification = (
    a: Active,
    hop: number,
    agent: string,
    capability: string,
    why: string,
  ): PlexusError => {
    deps.onVerificationFailure?.(agent);
    const err = new PlexusError(
      "sage_verification_failed",
      `SAGE verification failed for request ${a.requestId}, hop ${hop} (agent '${agent}', capability '${capability}'): ${why}`,
      { status: 502, data: { hop, agent, capability } },
    );
    a.failure ??= err;
    routing(a, agent, self, err.message, "error");
    return err;
  };

  /**
   * The promise every hop of `a` races its answer with: rejected when `a`
   * is aborted (its client went away, or its deadline passed). One per
   * prompt, made at its first hop, rejected by the prompt's own abort
   * listener (no listener or closure per hop).
   */
  const abortedOf = (a: Active): Promise<never> => {
    if (a.aborted) return a.aborted;
    a.aborted = new Promise<never>((_, reject) => {
      a.cancel = () =>
        reject(
          new PlexusError("cancelled", `request ${a.requestId} was cancelled`, {
            status: 499,
          }),
        );
    });
    a.aborted.catch(() => {});
    if (a.signal.aborted) a.cancel!();
    return a.aborted;
  };

  /** Where a hop goes: an agent here, or a node with an agent for it. */
  type Target = { agent: string } | { node: PromptNode };
  const label = (t: Target) => "agent" in t ? t.agent : `node:${t.node.id}`;

  /** Sends hop `hop` to `target` and checks its answer; the answer text and who gave it. */
  const sendHop = async (
    a: Active,
    hop: number,
    capability: string,
    target: Target,
    from: string,
    body: Record<string, unknown>,
  ): Promise<{ response: string; agent: string }> => {
    const remaining = a.deadline - Date.now();
    if (remaining <= 0) {
      throw new PlexusError(
        "timeout",
        `request ${a.requestId} passed its ${config.timeoutMs} ms deadline before hop ${hop}`,
        { status: 504 },
      );
    }
    const to = label(target);
    routing(a, from, to, String(body.prompt ?? ""));
    a.participants.add(to);
    const aborted = abortedOf(a);
    let caps = a.inflight.get(to);
    if (!caps) a.inflight.set(to, caps = []);
    caps.push(capability);
    const hopBody = {
      requestId: a.requestId,
      hop,
      ...body,
      sage: a.input.sage,
    };
    // A SAGE hop counts from its sending to its check: how many are in
    // flight decides the check's crypto (HopChecker).
    const counting = a.input.sage;
    if (counting) checks.begin();
    try {
      let raw: unknown;
      let agent: string;
      try {
        if ("agent" in target) {
          agent = target.agent;
          raw = await Promise.race([
            gateway.request(agent, `tasks.${capability}`, hopBody, {
              timeoutMs: remaining,
            }),
            aborted,
          ]);
        } else {
          const r = await Promise.race([
            deps.remote!.hop(
              target.node,
              capability,
              hopBody,
              remaining,
              a.signal,
            ),
            aborted,
          ]);
          agent = r.agent;
          raw = r.answer;
          a.participants.add(agent);
        }
      } finally {
        caps.splice(caps.indexOf(capability), 1);
        if (!caps.length && a.inflight.get(to) === caps) a.inflight.delete(to);
      }
      const answer = raw as { response?: unknown; signature?: unknown } | null;
      if (!answer || typeof answer.response !== "string") {
        throw new PlexusError(
          "bad_agent_answer",
          `agent '${agent}' answered hop ${hop} of request ${a.requestId} without a response text`,
          { status: 502 },
        );
      }
      const response = answer.response;
      if (a.input.sage) {
        if (typeof answer.signature !== "string") {
          throw failVerification(
            a,
            hop,
            agent,
            capability,
            "the answer is not signed",
          );
        }
        let did: string;
        let key: KeyObject;
        try {
          ({ did, key } = await keyOf(agent));
        } catch (err) {
          throw failVerification(
            a,
            hop,
            agent,
            capability,
            (err as Error).message,
          );
        }
        const fields = { requestId: a.requestId, hop, content: response };
        // Answers an agent finished together may share one signature, each
        // with its Merkle proof (sdk/sage.ts, plexus-sage/v2).
        const proof = (answer as { proof?: unknown }).proof;
        if (proof !== undefined && typeof proof !== "string") {
          throw failVerification(
            a,
            hop,
            agent,
            capability,
            "the answer's batch proof is not a string",
          );
        }
        const { valid, digest } = proof === undefined
          ? await checks.check(key, fields, answer.signature)
          : checkHopProof(key, fields, answer.signature, proof);
        if (!valid) {
          throw failVerification(
            a,
            hop,
            agent,
            capability,
            "the signature does not verify against the agent's enrolled key",
          );
        }
        a.chain.push({
          hop,
          capability,
          from,
          agent,
          agentDid: did,
          digest,
          signature: answer.signature,
          ...(proof === undefined ? {} : { proof }),
          signatureValid: true,
          timestamp: isoNow(),
        });
      }
      routing(a, agent, from, response);
      return { response, agent };
    } finally {
      if (counting) checks.end();
    }
  };

  /** An agent here for `capability` picked by the balancer, else a node with one; why none when undefined. */
  type Pick = { target?: Target; offered: number };
  /**
   * An agent here for `capability` picked by the balancer, at once (no
   * await), else a node with one; why none when no target.
   */
  const pickTarget = (
    capability: string,
    exclude: Set<string>,
  ): Pick | Promise<Pick> => {
    const local = agentsFor(capability);
    const candidates = exclude.size
      ? local.filter((id) => !exclude.has(id))
      : local;
    const picked = balancer.pick(candidates.map((id) => ({ id })));
    if (picked) {
      return { target: { agent: picked.id }, offered: candidates.length };
    }
    if (candidates.length || !deps.remote) {
      return { offered: candidates.length };
    }
    return pickRemote(capability, exclude);
  };
  /** A node with an agent for `capability` (none here). */
  const pickRemote = async (
    capability: string,
    exclude: Set<string>,
  ): Promise<Pick> => {
    const nodes = (await deps.remote!.nodesFor(capability)).filter((n) =>
      !exclude.has(`node:${n.id}`)
    );
    if (!nodes.length) return { offered: 0 };
    const node = nodes[rotation++ % nodes.length];
    remoteNodes.set(`node:${node.id}`, node);
    return { target: { node }, offered: 0 };
  };
  let rotation = 0;
  /** The nodes hops were sent to, by label (`node:{id}`), to reach them again. */
  const remoteNodes = new Map<string, PromptNode>();
  /** Hops carried here for prompts other nodes answer, by request id and agent. */
  const proxied = new Map<string, Proxied>();

  const isGatewayError = (err: unknown, code?: string) =>
    err instanceof GatewayRequestError &&
    (code === undefined || err.code === code);

  const parseAsk = (payload: unknown) => {
    const p = payload as
      | { capability?: unknown; requestId?: unknown; payload?: unknown }
      | null;
    if (
      !p || typeof p.capability !== "string" ||
      !CAPABILITY_RE.test(p.capability) || typeof p.requestId !== "string"
    ) {
      throw new GatewayRequestError(
        "bad_request",
        "a route request is {capability, requestId, payload} with capability a name like 'plan'",
      );
    }
    return p as { capability: string; requestId: string; payload?: unknown };
  };

  const route = async (req: AgentRequest): Promise<unknown> => {
    const p = parseAsk(req.payload);
    const a = actives.get(p.requestId);
    if (!a) {
      // A hop this node carries for another node's prompt: the ask goes there.
      const carried = proxied.get(`${p.requestId}\0${req.agentId}`);
      if (carried && deps.remote) {
        return await deps.remote.route(carried.origin, {
          requestId: p.requestId,
          agentId: req.agentId,
          capability: p.capability,
          payload: p.payload,
          via: deps.nodeId,
        });
      }
    }
    return await ask(a, req.agentId, p);
  };

  const routeRemote = async (r: RemoteAsk): Promise<unknown> => {
    const a = actives.get(r.requestId);
    // The agent answers a hop sent to node `via`: it takes part from now on.
    if (a?.participants.has(`node:${r.via}`)) a.participants.add(r.agentId);
    return await ask(a, r.agentId, {
      capability: r.capability,
      requestId: r.requestId,
      payload: r.payload,
    });
  };

  /** Routes agent `asker`'s ask as the next hop of prompt `a`. */
  const ask = async (
    a: Active | undefined,
    asker: string,
    p: { capability: string; requestId: string; payload?: unknown },
  ): Promise<unknown> => {
    if (!a || !a.participants.has(asker)) {
      throw new GatewayRequestError(
        "forbidden",
        `agent '${asker}' takes no part in a prompt '${
          p.requestId.slice(0, 64)
        }' answered on this node`,
      );
    }
    if (a.failure) {
      throw new GatewayRequestError("unavailable", a.failure.message);
    }
    if (a.hops >= config.maxHops) {
      throw new GatewayRequestError(
        "unavailable",
        `request ${a.requestId} reached its limit of ${config.maxHops} hops`,
      );
    }
    const capability = p.capability;
    const picking = pickTarget(capability, new Set([asker]));
    const { target } = picking instanceof Promise ? await picking : picking;
    if (!target) {
      routing(
        a,
        asker,
        self,
        `no agent offers '${capability}' on this node or another`,
        "warn",
      );
      throw new GatewayRequestError(
        "unavailable",
        `no agent offering '${capability}' is connected to node ${deps.nodeId} or another node`,
      );
    }
    const hop = ++a.hops;
    const payload = p.payload as { prompt?: unknown } | undefined;
    const t0 = performance.now();
    const report = (ok: boolean) => {
      if ("agent" in target) {
        balancer.report(target.agent, {
          ok,
          latencyMs: performance.now() - t0,
        });
      }
    };
    try {
      const { response, agent } = await sendHop(
        a,
        hop,
        capability,
        target,
        asker,
        {
          prompt: typeof payload?.prompt === "string"
            ? payload.prompt
            : a.input.prompt,
          ...(a.input.scenario ? { scenario: a.input.scenario } : {}),
          metadata: a.input.metadata,
          payload: p.payload,
          from: asker,
        },
      );
      report(true);
      return { response, agent, hop };
    } catch (err) {
      report(false);
      if (err instanceof PlexusError) {
        throw new GatewayRequestError(
          err.code === "timeout" ? "timeout" : "unavailable",
          err.message,
        );
      }
      if (isGatewayError(err)) {
        routing(a, label(target), asker, (err as Error).message, "warn");
      }
      throw err;
    }
  };

  /** Hands `c`'s pending pieces to its origin node, one call at a time, until none are left. */
  const forwardPieces = (requestId: string, c: Proxied) => {
    if (c.sending) return;
    c.sending = (async () => {
      try {
        while (c.pending.length) {
          const pieces = c.pending.splice(0);
          await deps.remote!.partial(c.origin, {
            requestId,
            agentId: c.agent,
            pieces,
            via: deps.nodeId,
          }).catch((err) =>
            log.debug("streamed pieces not handed on", {
              requestId,
              node: c.origin.id,
              error: err,
            })
          );
        }
      } finally {
        c.sending = undefined;
      }
    })();
  };

  const carry = async (
    origin: PromptNode,
    capability: string,
    body: Record<string, unknown>,
    timeoutMs: number,
  ): Promise<{ agent: string; answer: unknown }> => {
    const exclude = typeof body.from === "string" ? [body.from] : [];
    const candidates = agentsFor(capability).filter((id) =>
      !exclude.includes(id)
    );
    const picked = balancer.pick(candidates.map((id) => ({ id })));
    if (!picked) {
      throw new GatewayRequestError(
        "unavailable",
        `no agent offering '${capability}' is connected to node ${deps.nodeId}`,
      );
    }
    const requestId = String(body.requestId);
    const carriedKey = `${requestId}\0${picked.id}`;
    const carried: Proxied = {
      origin,
      agent: picked.id,
      capability,
      pending: [],
    };
    proxied.set(carriedKey, carried);
    const t0 = performance.now();
    try {
      const answer = await gateway.request(
        picked.id,
        `tasks.${capability}`,
        body,
        { timeoutMs },
      );
      balancer.report(picked.id, {
        ok: true,
        latencyMs: performance.now() - t0,
      });
      // The pieces streamed before the answer reach the origin before it.
      while (carried.sending) await carried.sending;
      return { agent: picked.id, answer };
    } catch (err) {
      balancer.report(picked.id, {
        ok: false,
        latencyMs: performance.now() - t0,
      });
      // The agent's own failure, not a drop: it is still connected.
      if (
        isGatewayError(err, "unavailable") &&
        agentsFor(capability).includes(picked.id)
      ) {
        throw new PlexusError(
          "agent_error",
          `agent '${picked.id}' on node ${deps.nodeId} failed: ${
            (err as Error).message
          }`,
          { status: 502 },
        );
      }
      throw err;
    } finally {
      proxied.delete(carriedKey);
    }
  };

  const cancelRemote = (c: { requestId: string; via: string }): number => {
    let told = 0;
    for (const [key, p] of proxied) {
      if (!key.startsWith(`${c.requestId}\0`) || p.origin.id !== c.via) {
        continue;
      }
      told++;
      log.warn("routing", {
        type: "routing",
        from: `node:${c.via}`,
        to: p.agent,
        content: `cancel: node ${c.via} gave up on request ${c.requestId}`,
        timestamp: isoNow(),
        messageId: crypto.randomUUID(),
        level: "warn",
        requestId: c.requestId,
      });
      gateway.request(p.agent, `tasks.${p.capability}`, {
        cancel: c.requestId,
      }, { timeoutMs: 5000 }).catch((err) =>
        log.debug("cancel not delivered", {
          agent: p.agent,
          requestId: c.requestId,
          error: err,
        })
      );
    }
    return told;
  };

  const answer = async (
    input: PromptInput,
    options: AnswerOptions = {},
  ): Promise<PromptResult> => {
    const t0 = performance.now();
    const requestId = options.requestId ?? crypto.randomUUID();
    const controller = new AbortController();
    const signal = controller.signal;
    // The caller's signal (the client went away) aborts this one; the
    // listener goes when the prompt is answered (no AbortSignal.any, whose
    // dependent signal stays linked to the request's).
    const outer = options.signal;
    const passOn = () => controller.abort(outer?.reason);
    if (outer?.aborted) passOn();
    else outer?.addEventListener("abort", passOn, { once: true });
    const a: Active = {
      requestId,
      input,
      participants: new Set(),
      hops: 0,
      logs: [],
      chain: [],
      signal,
      deadline: Date.now() + config.timeoutMs,
      onLog: options.onLog,
      onPartial: options.onPartial,
      inflight: new Map(),
    };
    actives.set(requestId, a);
    const timer = deadlines.add(config.timeoutMs, () => controller.abort());
    // Gone client or passed deadline: the agents still working are told to stop.
    const onAbort = () => {
      a.cancel?.();
      for (const [agent, caps] of a.inflight) {
        if (agent.startsWith("node:")) {
          // That node carries the hop: it tells its agent.
          const node = remoteNodes.get(agent);
          routing(
            a,
            self,
            agent,
            `cancel: ${
              String((signal.reason as Error)?.message ?? signal.reason)
            }`,
            "warn",
          );
          if (node && deps.remote) {
            deps.remote.cancel(node, { requestId, via: deps.nodeId }).catch((
              err,
            ) =>
              log.debug("cancel not delivered", {
                node: node.id,
                requestId,
                error: err,
              })
            );
          }
          continue;
        }
        routing(
          a,
          self,
          agent,
          `cancel: ${
            String((signal.reason as Error)?.message ?? signal.reason)
          }`,
          "warn",
        );
        for (const capability of new Set(caps)) {
          gateway.request(agent, `tasks.${capability}`, {
            cancel: requestId,
          }, { timeoutMs: 5000 }).catch((err) =>
            log.debug("cancel not delivered", { agent, requestId, error: err })
          );
        }
      }
    };
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      routing(a, "client", self, input.prompt);
      if (!input.sage) {
        routing(
          a,
          self,
          "client",
          "SAGE disabled: agent answers are not signed nor verified",
          "warn",
        );
      }
      const scenarioCap = input.scenario
        ? `${config.capability}.${input.scenario}`
        : undefined;
      const capability = scenarioCap && agentsFor(scenarioCap).length
        ? scenarioCap
        : config.capability;
      const tried = new Set<string>();
      let lastError: unknown;
      let offered = 0;
      for (let attempt = 0; attempt < config.attempts; attempt++) {
        const picking = pickTarget(capability, tried);
        const pick = picking instanceof Promise ? await picking : picking;
        offered = Math.max(offered, pick.offered);
        const target = pick.target;
        if (!target) break;
        const picked = { id: label(target) };
        tried.add(picked.id);
        const h0 = performance.now();
        try {
          const { response, agent } = await sendHop(
            a,
            0,
            capability,
            target,
            self,
            {
              prompt: input.prompt,
              ...(input.scenario ? { scenario: input.scenario } : {}),
              metadata: input.metadata,
            },
          );
          const ms = performance.now() - h0;
          if ("agent" in target) {
            balancer.report(agent, { ok: true, latencyMs: ms });
          }
          deps.onRootOutcome?.(agent, true, ms);
          if (a.failure) throw a.failure;
          routing(a, self, "client", response);
          const root = a.chain.find((l) => l.hop === 0);
          return {
            response,
            ...(input.sage && root
              ? {
                sageVerification: {
                  verified: true,
                  agentDid: root.agentDid,
                  signatureValid: true,
                  timestamp: isoNow(),
                  chain: [...a.chain].sort((x, y) => x.hop - y.hop),
                },
              }
              : {}),
            metadata: {
              requestId,
              processingTime: +(performance.now() - t0).toFixed(2),
              timestamp: isoNow(),
              agent,
              cached: false,
              ...(input.scenario ? { scenario: input.scenario } : {}),
              sageEnabled: input.sage,
            },
            logs: a.logs,
          };
        } catch (err) {
          const ms = performance.now() - h0;
          if ("agent" in target) {
            balancer.report(picked.id, { ok: false, latencyMs: ms });
            deps.onRootOutcome?.(picked.id, false, ms);
          }
          lastError = a.failure ?? err;
          // Only a root agent that went away is retried on another one:
          // a refusal, a timeout or a failed signature is the answer. An
          // agent's own `unavailable` (its handler threw) looks like a drop
          // but leaves it connected.
          const dropped = isGatewayError(err, "unavailable") &&
            !("agent" in target &&
              agentsFor(capability).includes(target.agent));
          if (!a.failure && dropped) {
            routing(
              a,
              picked.id,
              self,
              `root agent dropped: ${(err as Error).message}`,
              "warn",
            );
            continue;
          }
          throw a.failure ??
            toPlexusError(err, picked.id, requestId, dropped);
        }
      }
      if (lastError) {
        throw toPlexusError(lastError, [...tried].at(-1)!, requestId, true);
      }
      throw new PlexusError(
        "no_agent",
        offered && !tried.size
          ? `every agent offering '${capability}' on node ${deps.nodeId} has its circuit open`
          : `no agent offering '${capability}' is connected to node ${deps.nodeId}`,
        { status: 503, retryable: true, retryAfterS: 5, data: { capability } },
      );
    } finally {
      deadlines.cancel(timer);
      outer?.removeEventListener("abort", passOn);
      signal.removeEventListener("abort", onAbort);
      actives.delete(requestId);
    }
  };

  const partial = (agentId: string, body: unknown): boolean => {
    const p = body as { requestId?: unknown; hop?: unknown; delta?: unknown };
    if (
      typeof p?.requestId !== "string" || typeof p.delta !== "string" ||
      !Number.isSafeInteger(p.hop)
    ) return false;
    const a = actives.get(p.requestId);
    if (!a) {
      // A hop carried here for another node's prompt: the piece goes there.
      const carried = proxied.get(`${p.requestId}\0${agentId}`);
      if (!carried || !deps.remote) return false;
      carried.pending.push({ hop: p.hop as number, delta: p.delta });
      forwardPieces(p.requestId, carried);
      return true;
    }
    if (!a.participants.has(agentId) || a.signal.aborted) return false;
    a.onPartial?.({ hop: p.hop as number, agent: agentId, delta: p.delta });
    return true;
  };

  const partialRemote = (r: RemotePartial): number => {
    const a = actives.get(r.requestId);
    // Only from a node this prompt sent a hop to, while the prompt runs.
    if (!a || !a.participants.has(`node:${r.via}`) || a.signal.aborted) {
      return 0;
    }
    let taken = 0;
    for (const { hop, delta } of r.pieces) {
      if (!Number.isSafeInteger(hop) || typeof delta !== "string") continue;
      a.onPartial?.({ hop, agent: r.agentId, delta });
      taken++;
    }
    return taken;
  };

  return {
    answer,
    route,
    routeRemote,
    carry,
    cancelRemote,
    partial,
    partialRemote,
    rootAgents: (capability = config.capability) => agentsFor(capability),
    get active() {
      return actives.size;
    },
  };
}

/** The error a failed root hop answers with. */
function toPlexusError(
  err: unknown,
  agent: string,
  requestId: string,
  dropped: boolean,
): PlexusError {
  if (err instanceof PlexusError) return err;
  if (err instanceof GatewayRequestError) {
    if (err.code === "timeout") {
      return new PlexusError("timeout", err.message, { status: 504 });
    }
    if (dropped || err.code === "no_handler") {
      return new PlexusError(
        "agent_unavailable",
        `root agent '${agent}' dropped request ${requestId}: ${err.message}`,
        { status: 503, retryable: true, retryAfterS: 1 },
      );
    }
    return new PlexusError(
      "agent_error",
      `root agent '${agent}' refused request ${requestId} (${err.code}): ${err.message}`,
      { status: 502 },
    );
  }
  return new PlexusError(
    "agent_error",
    `request ${requestId} failed at root agent '${agent}': ${
      (err as Error)?.message ?? String(err)
    }`,
    { status: 502, cause: err },
  );
}

/**
 * The answer to a prompt served from the cache: the stored response and
 * root agent, `cached: true` (and `stale` with the entry's age for a stale
 * one), and the two routing steps of this request.
 */
export function cachedResult(
  input: PromptInput,
  entry: { response: string; agent: string; ageMs: number },
  options: {
    nodeId: string;
    requestId: string;
    startedAt: number;
    stale?: { reason: string };
    log: Logger;
  },
): PromptResult {
  const self = `node:${options.nodeId}`;
  // One clock read for the three timestamps (they fall in the same ms).
  const now = isoNow();
  const at = () => now;
  const logs: RoutingLog[] = [
    {
      type: "routing",
      from: "client",
      to: self,
      content: short(input.prompt),
      timestamp: at(),
      messageId: crypto.randomUUID(),
      level: "info",
    },
    {
      type: "routing",
      from: self,
      to: "client",
      content: options.stale
        ? `stale cached answer (${
          Math.round(entry.ageMs / 1000)
        } s old): ${options.stale.reason}`
        : `cached answer (${Math.round(entry.ageMs / 1000)} s old)`,
      timestamp: at(),
      messageId: crypto.randomUUID(),
      level: options.stale ? "warn" : "info",
    },
  ];
  for (const l of logs) {
    if (!options.log.enabled(l.level)) continue;
    options.log[l.level]("routing", { ...l, requestId: options.requestId });
  }
  return {
    response: entry.response,
    metadata: {
      requestId: options.requestId,
      processingTime: +(performance.now() - options.startedAt).toFixed(2),
      timestamp: at(),
      agent: entry.agent,
      cached: true,
      ...(options.stale ? { stale: true, ageMs: Math.round(entry.ageMs) } : {}),
      ...(input.scenario ? { scenario: input.scenario } : {}),
      sageEnabled: input.sage,
    },
    logs,
  };
}
