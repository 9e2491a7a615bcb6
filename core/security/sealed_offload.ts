/**
 * The sealed worker seen from the node's thread: a sealed transport made
 * with `worker: true` hands it each batch to seal, and each run of received
 * messages to check and decrypt, as one buffer and its plan (the buffer
 * transferred, not copied), and gets them back in the order sent. The node's thread then only lays
 * messages out, parses and publishes or delivers them; the ChaCha20, the
 * digests, the Merkle trees and the Ed25519 signatures run on the worker
 * (docs/security.md, "Sealed payloads": what runs where). Until the worker
 * has started, and where it cannot start (a `deno bundle` carries no module
 * beside it), the same functions run in the node's thread.
 *
 * @module
 */
import { KeyObject } from "node:crypto";
import {
  type OpenPlan,
  openPlan,
  type PlanSender,
  type SealPlan,
  sealPlan,
  verifiedBatches,
} from "./sealed_batch.ts";
import type { SealedWorkerMessage } from "./sealed_worker.ts";

/** Thrown for the work in flight when the worker fails or is closed. */
export class SealedWorkerError extends Error {
  /** Always "SealedWorkerError". */
  override name = "SealedWorkerError";
}

/**
 * One worker per sealed transport, started at the first call. A worker that
 * fails rejects everything it holds with a {@linkcode SealedWorkerError}
 * naming the cause (nothing waits forever); the next call starts a new one.
 * Calls made before it is ready, or when it cannot be loaded at all, run in
 * this thread (their results come back in order all the same: a call is
 * only sent to the worker once nothing runs here any more).
 *
 * @example Usage
 * ```ts ignore
 * const worker = new SealedWorker("node:a", signingKey);
 * const sealed = await worker.seal(plan); // the same plan, sealed
 * worker.close();
 * ```
 */
export class SealedWorker {
  #worker: Worker | undefined;
  #ready = false;
  /** The worker module does not load here: everything runs in this thread. */
  #unavailable = false;
  #next = 0;
  #waiting = new Map<
    number,
    { resolve(plan: unknown): void; reject(err: Error): void }
  >();
  #senders = new Map<CryptoKey, { index: number; from: string }>();
  /** This thread's copy of the senders, for calls run here. */
  #local: PlanSender[] = [];
  #signer: KeyObject | undefined;
  #closed = false;
  #started = Promise.withResolvers<boolean>();

  /** Seals as `from` with `signingKey` (an Ed25519 private key). */
  constructor(readonly from: string, readonly signingKey: CryptoKey) {}

  /**
   * Resolves once the worker has started (true) or cannot start here
   * (false: calls run in this thread). Starts it.
   */
  get started(): Promise<boolean> {
    if (!this.#worker && !this.#unavailable && !this.#closed) this.#start();
    return this.#started.promise;
  }

  /** Hands `plan` (its buffers transferred) to the worker: it comes back sealed. */
  seal(plan: SealPlan): Promise<SealPlan> {
    return this.#run(
      { op: "seal", id: this.#next++, plan },
      () =>
        sealPlan(
          plan,
          this.from,
          this.#signer ??= KeyObject.from(this.signingKey),
        ),
    );
  }

  /**
   * Hands `plan` to the worker: it comes back with each message checked
   * and, when its proof holds, decrypted in place.
   */
  open(plan: OpenPlan): Promise<OpenPlan> {
    return this.#run(
      { op: "open", id: this.#next++, plan },
      () => openPlan(plan, this.#local),
    );
  }

  /** `msg` to the worker, or `here` in this thread when it is not there. */
  #run<T extends SealPlan | OpenPlan>(
    msg: SealedWorkerMessage & { id: number; plan: T },
    here: () => void,
  ): Promise<T> {
    try {
      if (!this.#onWorker()) {
        here();
        return Promise.resolve(msg.plan);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#call(msg);
  }

  /** The index `open` plans name `key`'s sender by (the worker is told once). */
  sender(from: string, key: CryptoKey): number {
    let s = this.#senders.get(key);
    if (s?.from !== from) {
      s = { index: s?.index ?? this.#senders.size, from };
      this.#senders.set(key, s);
      let publicKey: KeyObject | undefined;
      this.#local[s.index] = {
        from,
        publicKey: () => publicKey ??= KeyObject.from(key),
        known: verifiedBatches(),
      };
      this.#worker?.postMessage({ op: "sender", index: s.index, from, key });
    }
    return s.index;
  }

  /** Stops the worker; work in flight is rejected. */
  close(): void {
    this.#closed = true;
    this.#fail("the sealed worker is closed");
    this.#started.resolve(false);
  }

  /** Whether this call goes to the worker (starting it if there is none). */
  #onWorker(): boolean {
    if (this.#closed) {
      throw new SealedWorkerError("the sealed worker is closed");
    }
    if (this.#unavailable) return false;
    if (!this.#worker) this.#start();
    return this.#ready;
  }

  #call<T extends SealPlan | OpenPlan>(
    msg: SealedWorkerMessage & { id: number; plan: T },
  ): Promise<T> {
    const done = Promise.withResolvers<T>();
    this.#waiting.set(msg.id, done as PromiseWithResolvers<unknown>);
    this.#worker!.postMessage(msg, [
      msg.plan.buf.buffer,
      msg.plan.items.buffer,
    ]);
    return done.promise;
  }

  #start(): void {
    // No Deno permissions: it needs none (`node:crypto` and its own modules,
    // which a Worker loads without read permission). `deno.permissions`
    // needs `--unstable-worker-options` (deno.json's "unstable" sets it).
    let worker: Worker;
    try {
      worker = new Worker(new URL("./sealed_worker.ts", import.meta.url), {
        type: "module",
        name: `sealed ${this.from}`,
        deno: { permissions: "none" },
      });
    } catch {
      this.#unavailable = true;
      this.#started.resolve(false);
      return;
    }
    this.#worker = worker;
    this.#ready = false;
    worker.onmessage = (e: MessageEvent) => {
      if (e.data === "ready") {
        if (this.#worker !== worker) return;
        this.#ready = true;
        this.#started.resolve(true);
        return;
      }
      const { id, plan, error } = e.data as {
        id: number;
        plan: unknown;
        error?: string;
      };
      const done = this.#waiting.get(id);
      if (!done) return;
      this.#waiting.delete(id);
      if (error === undefined) done.resolve(plan);
      else {
        done.reject(
          new SealedWorkerError(`the sealed worker refused a batch: ${error}`),
        );
      }
    };
    worker.onerror = (e: ErrorEvent) => {
      // An error the worker did not handle must not end the node.
      e.preventDefault();
      if (this.#worker !== worker) return;
      if (!this.#ready) {
        // It never started (its module is not there): this thread it is.
        this.#unavailable = true;
        this.#started.resolve(false);
      }
      this.#fail(`the sealed worker failed: ${e.message}`);
    };
    worker.onmessageerror = () =>
      this.#fail("the sealed worker sent a message that does not decode");
    const first: SealedWorkerMessage[] = [
      { op: "keys", from: this.from, signingKey: this.signingKey },
      ...[...this.#senders].map(([key, s]) => ({
        op: "sender" as const,
        index: s.index,
        from: s.from,
        key,
      })),
    ];
    for (const msg of first) worker.postMessage(msg);
  }

  #fail(reason: string): void {
    this.#worker?.terminate();
    this.#worker = undefined;
    this.#ready = false;
    const waiting = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const w of waiting) w.reject(new SealedWorkerError(reason));
  }
}
