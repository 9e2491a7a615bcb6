/**
 * Exclusive ownership of a topic's partition streams within one consumer
 * group, so messages with one key are handled by one consumer, in order.
 *
 * Each member heartbeats into a sorted set (`membersKey`) and holds at most
 * its share, `ceil(partitions / live members)`, of partition leases
 * (`SET … NX PX leaseMs`, renewed every `leaseMs / 3` with a compare-and-
 * expire script). A member over its share drains the excess (stops reading,
 * lets what it started finish) and then deletes those leases; a member under
 * its share takes free ones. A member that dies or stalls for `leaseMs`
 * loses its leases, and whoever takes a partition next claims its pending
 * entries first.
 *
 * Ordering holds while leases are honoured: a consumer paused for longer than
 * `leaseMs` may still be finishing a message when the next owner starts the
 * key's next one (the zombie-consumer case Kafka has too).
 *
 * @module
 */
import type { Redis } from "ioredis";
import { leaseKey, membersKey } from "./wire.ts";

const RENEW =
  "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE =
  "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/** Options of {@linkcode PartitionOwner}. */
export interface PartitionOwnerOptions {
  prefix: string;
  topic: string;
  group: string;
  /** This member's unique name (the lease value). */
  consumer: string;
  partitions: number;
  /** Lease lifetime; renewed every third of it. */
  leaseMs: number;
  /** Whether partition `n` has no work left (it can be handed over). */
  idle(n: number): boolean;
  /** Called when a lease is newly held. */
  onAcquire(n: number): void;
}

/**
 * One member's partition leases. `readable()` lists the partitions to read
 * from (held and not draining); `owns(n)` whether work on `n` may start.
 *
 * @example Usage
 * ```ts ignore
 * import { PartitionOwner } from "./partitions.ts";
 * const owner = new PartitionOwner(redis, { prefix: "plexus:", topic: "orders", group: "billing",
 *   consumer: "c-1", partitions: 8, leaseMs: 30_000, idle: () => true, onAcquire: () => {} });
 * await owner.tick();
 * owner.readable(); // e.g. [0, 1, 2, 3, 4, 5, 6, 7] while alone
 * ```
 */
export class PartitionOwner {
  readonly #redis: Redis;
  readonly #o: PartitionOwnerOptions;
  readonly #held = new Set<number>();
  readonly #draining = new Set<number>();
  readonly #members: string;

  constructor(redis: Redis, options: PartitionOwnerOptions) {
    this.#redis = redis;
    this.#o = options;
    this.#members = membersKey(options.prefix, options.topic, options.group);
  }

  #lease(n: number): string {
    return leaseKey(this.#o.prefix, this.#o.topic, this.#o.group, n);
  }

  /** Partitions to read new entries from. */
  readable(): number[] {
    return [...this.#held].filter((n) => !this.#draining.has(n)).sort((
      a,
      b,
    ) => a - b);
  }

  /** Whether work on partition `n` may start here. */
  owns(n: number): boolean {
    return this.#held.has(n);
  }

  /** Heartbeat, renew, hand over the excess, take the share. */
  async tick(): Promise<void> {
    const o = this.#o;
    const now = Date.now();
    const [, , members] = await Promise.all([
      this.#redis.zadd(this.#members, now, o.consumer),
      this.#redis.zremrangebyscore(this.#members, "-inf", now - o.leaseMs),
      this.#redis.zcard(this.#members),
    ]);
    const renewed = await Promise.all(
      [...this.#held].map((n) =>
        this.#redis.eval(RENEW, 1, this.#lease(n), o.consumer, o.leaseMs)
      ),
    );
    [...this.#held].forEach((n, i) => {
      if (renewed[i] !== 1) {
        this.#held.delete(n); // lost (we stalled past leaseMs)
        this.#draining.delete(n);
      }
    });
    const share = Math.ceil(o.partitions / Math.max(1, members));
    const keep = this.readable();
    for (let i = share; i < keep.length; i++) this.#draining.add(keep[i]);
    for (const n of [...this.#draining]) {
      if (!o.idle(n)) continue;
      await this.#redis.eval(RELEASE, 1, this.#lease(n), o.consumer);
      this.#held.delete(n);
      this.#draining.delete(n);
    }
    if (this.#held.size >= share) return;
    // Start the search at a member-specific offset so members rarely collide.
    const start = hashOf(o.consumer) % o.partitions;
    for (let i = 0; i < o.partitions && this.#held.size < share; i++) {
      const n = (start + i) % o.partitions;
      if (this.#held.has(n)) continue;
      const ok = await this.#redis.set(
        this.#lease(n),
        o.consumer,
        "PX",
        o.leaseMs,
        "NX",
      );
      if (ok === "OK") {
        this.#held.add(n);
        o.onAcquire(n);
      }
    }
  }

  /** Gives every lease back and leaves the member set. */
  async stop(): Promise<void> {
    const held = [...this.#held];
    this.#held.clear();
    this.#draining.clear();
    await Promise.all([
      ...held.map((n) =>
        this.#redis.eval(RELEASE, 1, this.#lease(n), this.#o.consumer)
      ),
      this.#redis.zrem(this.#members, this.#o.consumer),
    ]);
  }
}

function hashOf(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
  return h;
}
