/**
 * Which implementation each crypto path of the agent gateway uses, decided
 * by measurement on this machine: ChaCha20-Poly1305 seal+open at 256 B,
 * 16 KiB and 1 MiB with `node:crypto` (synchronous), WebCrypto (async) and
 * `@noble/ciphers`; Ed25519 sign and verify and X25519 with WebCrypto and
 * `@noble/curves`; HKDF-SHA256 with `node:crypto` and WebCrypto.
 *
 *   deno run -A bench/crypto_paths.ts [--quick]
 *
 * Candidates run interleaved in rounds in one process; each figure is the
 * median over rounds of operations per second. The last line is the JSON
 * result: the record layer's choice (node:crypto) at 256 B against the best
 * alternative, plus every figure under `"paths"`.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, hkdfSync } from "node:crypto";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { info, isQuick, median, round } from "./_util.ts";

const quick = isQuick();
const ROUNDS = quick ? 3 : 7;
const ROUND_MS = quick ? 120 : 300;

type Op = () => unknown | Promise<unknown>;

async function opsPerSecond(op: Op): Promise<number> {
  // Calibrate a batch that takes a few ms, then run batches for ROUND_MS.
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ROUND_MS) {
    for (let i = 0; i < 8; i++) {
      const r = op();
      if (r instanceof Promise) await r;
    }
    n += 8;
    t = performance.now();
  }
  return n / ((t - t0) / 1000);
}

async function compare(
  label: string,
  candidates: Record<string, Op>,
): Promise<Record<string, number>> {
  const runs: Record<string, number[]> = {};
  for (const name of Object.keys(candidates)) {
    await opsPerSecond(candidates[name]); // warm up
    runs[name] = [];
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, op] of Object.entries(candidates)) {
      runs[name].push(await opsPerSecond(op));
    }
  }
  const out: Record<string, number> = {};
  for (const [name, v] of Object.entries(runs)) out[name] = round(median(v));
  const best = Object.entries(out).sort((a, b) => b[1] - a[1])[0][0];
  info(
    `${label.padEnd(34)} ${
      Object.entries(out).map(([k, v]) => `${k} ${v}/s`).join("  ")
    }  → fastest: ${best}`,
  );
  return out;
}

const key = crypto.getRandomValues(new Uint8Array(32));
const nonce = new Uint8Array(12);
const aad = crypto.getRandomValues(new Uint8Array(120));
const webKey = await crypto.subtle.importKey(
  "raw-secret",
  key,
  { name: "ChaCha20-Poly1305" },
  false,
  ["encrypt", "decrypt"],
);

function nodeSealOpen(plain: Uint8Array): Op {
  return () => {
    const c = createCipheriv("chacha20-poly1305", key, nonce, {
      authTagLength: 16,
    });
    c.setAAD(aad, { plaintextLength: plain.length });
    const ct = c.update(plain);
    c.final();
    const tag = c.getAuthTag();
    const d = createDecipheriv("chacha20-poly1305", key, nonce, {
      authTagLength: 16,
    });
    d.setAAD(aad, { plaintextLength: ct.length });
    d.setAuthTag(tag);
    d.update(ct);
    d.final();
  };
}

function webSealOpen(plain: Uint8Array<ArrayBuffer>): Op {
  const params = { name: "ChaCha20-Poly1305", iv: nonce, additionalData: aad };
  return async () => {
    const ct = await crypto.subtle.encrypt(params, webKey, plain);
    await crypto.subtle.decrypt(params, webKey, ct);
  };
}

function nobleSealOpen(plain: Uint8Array): Op {
  return () => {
    const ct = chacha20poly1305(key, nonce, aad).encrypt(plain);
    chacha20poly1305(key, nonce, aad).decrypt(ct);
  };
}

const paths: Record<string, Record<string, number>> = {};
for (const size of [256, 16 * 1024, 1 << 20]) {
  const plain = crypto.getRandomValues(new Uint8Array(Math.min(size, 65536)));
  const body = size > 65536 ? new Uint8Array(size) : plain;
  paths[`chacha20poly1305_seal_open_${size}B`] = await compare(
    `ChaCha20-Poly1305 seal+open ${size} B`,
    {
      "node:crypto": nodeSealOpen(body),
      webcrypto: webSealOpen(body),
      noble: nobleSealOpen(body),
    },
  );
}

const edSeed = crypto.getRandomValues(new Uint8Array(32));
const edPub = ed25519.getPublicKey(edSeed);
const webEd = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
  "sign",
  "verify",
]) as CryptoKeyPair;
const msg = crypto.getRandomValues(new Uint8Array(64));
const webSig = new Uint8Array(
  await crypto.subtle.sign("Ed25519", webEd.privateKey, msg),
);
const nobleSig = ed25519.sign(msg, edSeed);
paths.ed25519_sign = await compare("Ed25519 sign", {
  webcrypto: () => crypto.subtle.sign("Ed25519", webEd.privateKey, msg),
  noble: () => ed25519.sign(msg, edSeed),
});
paths.ed25519_verify = await compare("Ed25519 verify", {
  webcrypto: () =>
    crypto.subtle.verify("Ed25519", webEd.publicKey, webSig, msg),
  noble: () => ed25519.verify(nobleSig, msg, edPub, { zip215: false }),
});
const xa = await crypto.subtle.generateKey({ name: "X25519" }, true, [
  "deriveBits",
]) as CryptoKeyPair;
const xb = await crypto.subtle.generateKey({ name: "X25519" }, true, [
  "deriveBits",
]) as CryptoKeyPair;
const xPriv = crypto.getRandomValues(new Uint8Array(32));
const xPub = x25519.getPublicKey(crypto.getRandomValues(new Uint8Array(32)));
paths.x25519_generate_and_derive = await compare("X25519 keygen + derive", {
  webcrypto: async () => {
    const e = await crypto.subtle.generateKey({ name: "X25519" }, true, [
      "deriveBits",
    ]) as CryptoKeyPair;
    await crypto.subtle.exportKey("raw", e.publicKey);
    await crypto.subtle.deriveBits(
      { name: "X25519", public: xb.publicKey },
      e.privateKey,
      256,
    );
  },
  noble: () => {
    x25519.getPublicKey(xPriv);
    x25519.getSharedSecret(xPriv, xPub);
  },
});
void xa;
const ikm = crypto.getRandomValues(new Uint8Array(32));
const hkdfKey = await crypto.subtle.importKey("raw", ikm, "HKDF", false, [
  "deriveBits",
]);
paths.hkdf_sha256_80B = await compare("HKDF-SHA256 80 B", {
  "node:crypto": () => hkdfSync("sha256", ikm, aad, "info", 80),
  webcrypto: () =>
    crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: aad, info: new Uint8Array(4) },
      hkdfKey,
      640,
    ),
});

const small = paths["chacha20poly1305_seal_open_256B"];
const alternative = Object.entries(small).filter(([k]) => k !== "node:crypto")
  .sort((a, b) => b[1] - a[1])[0];
console.log(JSON.stringify({
  bench: "crypto_paths",
  metric: "chacha20poly1305_seal_open_256B_per_s",
  unit: "1/s",
  value: small["node:crypto"],
  baseline: {
    name: `${alternative[0]} ChaCha20-Poly1305 seal+open 256 B`,
    value: alternative[1],
  },
  ratio: round(small["node:crypto"] / alternative[1], 2),
  paths,
}));
