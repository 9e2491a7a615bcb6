/**
 * The sealed worker's entry (started by `sealed_offload.ts`): it seals the
 * batches it is handed with {@linkcode sealPlan} and checks and decrypts
 * received messages with {@linkcode openPlan}, handing each buffer back
 * (transferred both ways). It keeps what verifying needs from one batch to
 * the next: the senders' keys and the batches verified under each. Started
 * with no Deno permissions, it needs none: `node:crypto` and its own modules.
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

/** The Worker global (this module runs only inside a Worker). */
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
};
let signer: KeyObject | undefined;
/** Why the signing key handed over does not import, when it does not. */
let keysError: string | undefined;
let from = "";
const senders: PlanSender[] = [];

/** What the worker is sent. */
export type SealedWorkerMessage =
  | { op: "keys"; from: string; signingKey: CryptoKey }
  | { op: "sender"; index: number; from: string; key: CryptoKey }
  | { op: "seal"; id: number; plan: SealPlan }
  | { op: "open"; id: number; plan: OpenPlan };

scope.onmessage = (e: MessageEvent) => {
  const msg = e.data as SealedWorkerMessage;
  switch (msg.op) {
    case "keys":
      from = msg.from;
      // A key that does not import is each batch's refusal, not a crash:
      // a crash would be restarted with the same key, again and again.
      try {
        signer = KeyObject.from(msg.signingKey);
      } catch (err) {
        keysError = `the signing key does not import: ${
          (err as Error).message
        }`;
      }
      return;
    case "sender": {
      const key = msg.key;
      let publicKey: KeyObject | undefined;
      senders[msg.index] = {
        from: msg.from,
        publicKey: () => publicKey ??= KeyObject.from(key),
        known: verifiedBatches(),
      };
      return;
    }
    case "seal": {
      const { plan } = msg;
      let error: string | undefined;
      try {
        if (!signer) {
          throw new Error(
            keysError ?? "no signing key was handed to the worker",
          );
        }
        sealPlan(plan, from, signer);
      } catch (err) {
        error = (err as Error).message;
      }
      scope.postMessage({ id: msg.id, plan, error }, [
        plan.buf.buffer,
        plan.items.buffer,
      ]);
      return;
    }
    case "open": {
      const { plan } = msg;
      let error: string | undefined;
      try {
        openPlan(plan, senders);
      } catch (err) {
        error = (err as Error).message;
      }
      scope.postMessage({ id: msg.id, plan, error }, [
        plan.buf.buffer,
        plan.items.buffer,
      ]);
      return;
    }
    default:
      throw new Error(
        `unknown message to the sealed worker: ${(msg as { op?: unknown }).op}`,
      );
  }
};

// Loaded: calls go here from now on (until then they ran in the node's thread).
scope.postMessage("ready");
