import assert from "node:assert/strict";
import { SEAL_ITEM, type SealPlan } from "./sealed_batch.ts";
import { SealedWorker, SealedWorkerError } from "./sealed_offload.ts";

function plan(keyBytes = 32): SealPlan {
  const items = new Int32Array(SEAL_ITEM);
  items.set([0, 4, 24, 8, 0, 0]);
  return {
    buf: new Uint8Array(1024),
    items,
    sessions: [{ key: new Uint8Array(keyBytes), n: 0 }],
  };
}

async function ed25519(): Promise<CryptoKey> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  return pair.privateKey;
}

Deno.test("sealed worker: a batch comes back sealed, its proof's end written", async () => {
  const worker = new SealedWorker("node:a", await ed25519());
  try {
    // In this thread until the worker is there, then on it: the same bytes.
    const here = await worker.seal(plan());
    assert.equal(await worker.started, true);
    const back = await worker.seal(plan());
    assert.deepEqual(back.items, here.items);
    // 24 + 8 bytes of ciphertext, then a signature, root, sizes and no path.
    assert.equal(back.items[SEAL_ITEM - 1], 24 + 8 + 64 + 32 + 5);
    assert.notDeepEqual(back.buf.subarray(96, 160), new Uint8Array(64));
  } finally {
    worker.close();
  }
});

Deno.test("sealed worker: a batch it cannot seal is refused with the cause, and the worker goes on", async () => {
  const worker = new SealedWorker("node:a", await ed25519());
  try {
    assert.equal(await worker.started, true);
    await assert.rejects(
      () => worker.seal(plan(5)),
      (err: Error) =>
        err instanceof SealedWorkerError &&
        /refused a batch: .*key/i.test(err.message),
    );
    await worker.seal(plan());
  } finally {
    worker.close();
  }
});

Deno.test("sealed worker: a signing key that does not import refuses each batch with a SealedWorkerError (no crash, no hang); a closed worker refuses", async () => {
  // Not a key: the worker cannot import it, and says so per batch.
  const worker = new SealedWorker("node:a", {} as CryptoKey);
  assert.equal(await worker.started, true);
  for (let i = 0; i < 2; i++) {
    await assert.rejects(
      () => worker.seal(plan()),
      (err: Error) =>
        err instanceof SealedWorkerError &&
        /refused a batch: the signing key does not import/.test(err.message),
    );
  }
  worker.close();
  await assert.rejects(
    () => worker.seal(plan()),
    (err: Error) =>
      err instanceof SealedWorkerError && /closed/.test(err.message),
  );
});

Deno.test("sealed worker: a worker that crashes rejects what it holds with a SealedWorkerError (no hang) and is ended", async () => {
  // A stand-in Worker: ready at once, holds what it is sent, crashes on cue.
  class CrashingWorker {
    static last?: CrashingWorker;
    onmessage: ((e: MessageEvent) => void) | null = null;
    onerror: ((e: ErrorEvent) => void) | null = null;
    onmessageerror: (() => void) | null = null;
    posted: unknown[] = [];
    terminated = false;
    constructor() {
      CrashingWorker.last = this;
      queueMicrotask(() =>
        this.onmessage?.(new MessageEvent("message", { data: "ready" }))
      );
    }
    postMessage(msg: unknown) {
      this.posted.push(msg);
    }
    terminate() {
      this.terminated = true;
    }
  }
  const real = globalThis.Worker;
  globalThis.Worker = CrashingWorker as unknown as typeof Worker;
  try {
    const worker = new SealedWorker("node:a", await ed25519());
    assert.equal(await worker.started, true);
    const held = worker.seal(plan());
    const fake = CrashingWorker.last!;
    assert.equal(
      (fake.posted.at(-1) as { op?: string }).op,
      "seal",
      "the batch went to the worker",
    );
    fake.onerror!(new ErrorEvent("error", { message: "boom" }));
    await assert.rejects(
      held,
      (err: Error) =>
        err instanceof SealedWorkerError &&
        /the sealed worker failed: boom/.test(err.message),
    );
    assert.equal(fake.terminated, true);
    worker.close();
  } finally {
    globalThis.Worker = real;
  }
});
