/**
 * Membership changes at runtime: add or remove one voter of a running Raft
 * cluster. Any node takes the request; a follower forwards it to its leader
 * as a control value over the authenticated links. The leader links to a
 * new node's URL (it must prove the id it is added as), proposes the change
 * and answers once the configuration entry is applied. It then tells every
 * linked peer the new URL, and tells a removed node that it is out.
 *
 * @module
 */
import type { RaftDriver } from "./driver.ts";
import type { RaftLinks } from "./links.ts";
import type { ConfChangeData } from "./types.ts";

/** A membership change asked through the API. */
export type MemberChange =
  | { op: "add"; id: string; url: string }
  | { op: "remove"; id: string };

/** An HTTP-shaped answer: status and JSON body. */
export interface MemberAnswer {
  status: number;
  body: Record<string, unknown>;
}

/** What {@linkcode createMembership} needs from the plugin. */
export interface MembershipOptions {
  /** This node's id. */
  id: string;
  /** The running driver, if Raft has started. */
  driver: () => RaftDriver | undefined;
  links: RaftLinks;
  /** How long a change (linking, committing) may take. */
  timeoutMs: number;
  /** Records a member's URL so a restart dials it. */
  rememberPeer: (url: string) => void;
  /** Called on the node that was removed (by a leader's notice or its own log). */
  onRemoved: () => void;
}

/** Membership change handling of one node. */
export interface Membership {
  /** Carries out (or forwards to the leader) one change. */
  change(req: MemberChange, forwarded?: boolean): Promise<MemberAnswer>;
  /** Feeds a control value that arrived from a linked peer. */
  onControl(from: string, data: unknown): void;
  /**
   * Called when a peer's link comes up: a leader tells a node that was
   * removed while it was down (its log still names it a voter) that it is out.
   */
  onPeerLinked(id: string): void;
}

type Control =
  | { k: "req"; rid: string; req: MemberChange }
  | { k: "res"; rid: string; status: number; body: Record<string, unknown> }
  | { k: "peer"; url: string }
  | { k: "removed" };

const fail = (status: number, message: string, code: string): MemberAnswer => ({
  status,
  body: { error: { code, message } },
});

/**
 * Checks a `POST /api/v1/raft/members` body; a TypeError names the bad field
 * and the value seen.
 *
 * @example Usage
 * ```ts
 * import { parseMemberAdd } from "./members.ts";
 * parseMemberAdd({ id: "n4", url: "http://127.0.0.1:8089" }).id; // "n4"
 * ```
 */
export function parseMemberAdd(body: unknown): MemberChange {
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    throw new TypeError(`expected a JSON object body, got ${typeof body}`);
  }
  const b = body as Record<string, unknown>;
  if (typeof b.id !== "string" || !/^[\w.:-]{1,128}$/.test(b.id)) {
    throw new TypeError(
      `field 'id' must be a node id (letters, digits, . _ : -), got ${
        JSON.stringify(b.id)
      }`,
    );
  }
  let url: URL | undefined;
  try {
    url = typeof b.url === "string" ? new URL(b.url) : undefined;
  } catch { /* answered below */ }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw new TypeError(
      `field 'url' must be the node's http(s) base URL, got ${
        JSON.stringify(b.url)
      }`,
    );
  }
  return { op: "add", id: b.id, url: url.origin };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Creates the membership handling of one node.
 *
 * @example Usage
 * ```ts ignore
 * const m = createMembership({ id, driver: () => driver, links, timeoutMs: 5000, rememberPeer, onRemoved });
 * const answer = await m.change({ op: "add", id: "n4", url: "http://10.0.0.4:8086" });
 * ```
 */
export function createMembership(o: MembershipOptions): Membership {
  let busy = false;
  const waiting = new Map<string, (a: MemberAnswer) => void>();

  const until = async (cond: () => boolean): Promise<boolean> => {
    const end = Date.now() + o.timeoutMs;
    while (Date.now() < end) {
      if (cond()) return true;
      await sleep(10);
    }
    return cond();
  };

  const forward = async (
    d: RaftDriver,
    req: MemberChange,
  ): Promise<MemberAnswer> => {
    const lead = d.leader();
    if (!lead) {
      return fail(503, `no raft leader known on ${o.id}; retry`, "unavailable");
    }
    const rid = crypto.randomUUID();
    const answer = new Promise<MemberAnswer>((resolve) =>
      waiting.set(rid, resolve)
    );
    if (!o.links.control(lead, { k: "req", rid, req } satisfies Control)) {
      waiting.delete(rid);
      return fail(
        503,
        `${o.id} has no link to the leader ${lead}; retry`,
        "unavailable",
      );
    }
    const timer = sleep(o.timeoutMs + 1000).then(() =>
      fail(
        504,
        `the leader ${lead} did not answer within ${o.timeoutMs} ms; the change may still happen`,
        "timeout",
      )
    );
    const a = await Promise.race([answer, timer]);
    waiting.delete(rid);
    return a;
  };

  const lead = async (
    d: RaftDriver,
    req: MemberChange,
  ): Promise<MemberAnswer> => {
    const node = d.node;
    if (busy || node.confIndex() > node.log.committed) {
      return fail(
        409,
        "a membership change is in progress; retry when it has committed",
        "conflict",
      );
    }
    const voters = node.voters();
    if (req.op === "add" && voters.includes(req.id)) {
      return fail(409, `${req.id} is already a voter`, "conflict");
    }
    if (req.op === "remove" && !voters.includes(req.id)) {
      return fail(
        404,
        `${req.id} is not a voter (voters: ${voters.join(", ")})`,
        "not_found",
      );
    }
    if (req.op === "remove" && voters.length === 1) {
      return fail(409, `cannot remove the last voter ${req.id}`, "conflict");
    }
    busy = true;
    try {
      if (req.op === "add") {
        o.links.dial(req.url);
        const linked = await until(() =>
          o.links.peers().some((p) => p.id === req.id && p.connected)
        );
        if (!linked) {
          o.links.forget(req.url);
          return fail(
            502,
            `no authenticated link to ${req.url} proving id ${req.id} within ${o.timeoutMs} ms`,
            "bad_gateway",
          );
        }
      }
      const term = node.term;
      const index = d.proposeConfChange({ type: req.op, node: req.id });
      if (index === undefined) {
        return fail(
          409,
          `the leader ${o.id} refused the change now (a change pending, or no entry of term ${term} committed yet); retry`,
          "conflict",
        );
      }
      const applied = await until(() => d.applied >= index);
      if (!applied || node.log.term(index) !== term) {
        return fail(
          504,
          `the membership change at index ${index} was not applied within ${o.timeoutMs} ms; it may still commit`,
          "timeout",
        );
      }
      if (req.op === "add") {
        o.rememberPeer(req.url);
        // Everyone learns the new URL; the new node learns everyone's.
        for (const p of o.links.peers()) {
          if (p.id === req.id) continue;
          o.links.control(p.id, { k: "peer", url: req.url } satisfies Control);
          if (p.address) {
            o.links.control(
              req.id,
              { k: "peer", url: p.address } satisfies Control,
            );
          }
        }
      } else if (req.id === o.id) o.onRemoved();
      else o.links.control(req.id, { k: "removed" } satisfies Control);
      return {
        status: 200,
        body: { ok: true, ...req, index, voters: node.voters() },
      };
    } finally {
      busy = false;
    }
  };

  const change = (
    req: MemberChange,
    forwarded = false,
  ): Promise<MemberAnswer> => {
    const d = o.driver();
    if (!d || !d.node.promotable()) {
      return Promise.resolve(fail(
        503,
        `${o.id} is not a voter of a running raft cluster; ask a member`,
        "unavailable",
      ));
    }
    if (d.isLeader()) return lead(d, req);
    if (forwarded) {
      return Promise.resolve(
        fail(503, `${o.id} no longer leads; retry`, "unavailable"),
      );
    }
    return forward(d, req);
  };

  /** Whether the last configuration entry in the log naming `id` removed it. */
  const removedInLog = (d: RaftDriver, id: string): boolean => {
    const log = d.node.log;
    for (let i = log.lastIndex(); i >= log.firstIndex(); i--) {
      const e = log.entry(i);
      if (e.type !== "conf") continue;
      const cc = JSON.parse(e.data) as ConfChangeData;
      if (cc.node === id) return cc.type === "remove";
    }
    return false;
  };

  return {
    change,
    onPeerLinked(id) {
      const d = o.driver();
      if (!d?.isLeader() || d.node.voters().includes(id)) return;
      if (removedInLog(d, id)) {
        o.links.control(id, { k: "removed" } satisfies Control);
      }
    },
    onControl(from, data) {
      const c = data as Control;
      if (!c || typeof c !== "object") return;
      if (c.k === "req" && typeof c.rid === "string" && c.req) {
        change(c.req, true).then((a) =>
          o.links.control(from, { k: "res", rid: c.rid, ...a })
        );
      } else if (c.k === "res") {
        waiting.get(c.rid)?.({ status: c.status, body: c.body });
      } else if (c.k === "peer" && typeof c.url === "string") {
        o.links.dial(c.url);
        o.rememberPeer(c.url);
      } else if (c.k === "removed") {
        o.onRemoved();
      }
    },
  };
}
