/**
 * The Deno KV {@linkcode NonceStore}: the only part of HTTP signatures
 * that touches KV.
 *
 * @module
 */
import { type Clock, systemClock } from "../../clock.ts";
import { signatureNonceKey } from "../../state/keys.ts";
import type { NonceStore } from "./verify.ts";

/** Options for {@linkcode kvNonceStore}. */
export interface KvNonceStoreOptions {
  /** @default {systemClock} */
  clock?: Clock;
  /**
   * Nonces recorded in one KV commit at most (each is one check; KV Connect
   * servers may allow only 10 per operation). @default {10}
   */
  maxBatch?: number;
  /** Batch commits in flight at once (one lets batches grow under load). @default {1} */
  maxInFlight?: number;
}

interface PendingNonce {
  key: Deno.KvKey;
  expireIn?: number;
  resolve(first: boolean): void;
  reject(err: unknown): void;
}

/**
 * A {@linkcode NonceStore} in Deno KV under `["sig-nonce", keyid, nonce]`:
 * an atomic insert-if-absent, so two nodes sharing the KV cannot both accept
 * one nonce. `expireIn` only garbage-collects; KV may keep the key longer,
 * which only makes replay detection stricter.
 *
 * Group commit: nonces that arrive while earlier commits are in flight are
 * recorded together, one commit for up to `maxBatch` of them, so a busy node
 * pays one KV write per batch rather than per request (a commit to a KV
 * file costs several times an Ed25519 verification). A batch whose commit
 * fails because one of its nonces was already there is retried one nonce at
 * a time, so exactly the replays are refused; the same nonce twice in one
 * batch is accepted once.
 *
 * @example Usage
 * ```ts
 * import { kvNonceStore } from "./mod.ts";
 * const kv = await Deno.openKv(":memory:");
 * const seen = kvNonceStore(kv);
 * await seen("node-1", "n1", 300); // true
 * await seen("node-1", "n1", 300); // false
 * kv.close();
 * ```
 */
export function kvNonceStore(
  kv: Deno.Kv,
  options: KvNonceStoreOptions = {},
): NonceStore {
  const clock = options.clock ?? systemClock;
  const maxBatch = options.maxBatch ?? 10;
  const maxInFlight = options.maxInFlight ?? 1;
  const pending: PendingNonce[] = [];
  let inFlight = 0;

  const commit = (items: PendingNonce[]) => {
    const op = kv.atomic();
    const seenAt = clock.now();
    for (const it of items) {
      op.check({ key: it.key, versionstamp: null }).set(
        it.key,
        { seenAt },
        it.expireIn ? { expireIn: it.expireIn } : undefined,
      );
    }
    return op.commit();
  };

  async function run(batch: PendingNonce[]): Promise<void> {
    // The same key twice in a batch: the first one decides, the rest are replays.
    const first = new Map<string, PendingNonce>();
    const repeats: PendingNonce[] = [];
    for (const it of batch) {
      const k = JSON.stringify(it.key);
      if (first.has(k)) repeats.push(it);
      else first.set(k, it);
    }
    const unique = [...first.values()];
    try {
      if ((await commit(unique)).ok) {
        for (const it of unique) it.resolve(true);
      } else {
        for (const it of unique) it.resolve((await commit([it])).ok);
      }
      for (const it of repeats) it.resolve(false);
    } catch (err) {
      for (const it of batch) it.reject(err);
    }
  }

  function pump(): void {
    while (inFlight < maxInFlight && pending.length > 0) {
      inFlight++;
      run(pending.splice(0, maxBatch)).finally(() => {
        inFlight--;
        pump();
      });
    }
  }

  return (keyid, nonce, ttlSec) =>
    new Promise<boolean>((resolve, reject) => {
      const expireIn = Number.isFinite(ttlSec)
        ? Math.max(1, Math.ceil(ttlSec * 1000))
        : undefined;
      pending.push({
        key: signatureNonceKey(keyid, nonce),
        expireIn,
        resolve,
        reject,
      });
      pump();
    });
}
