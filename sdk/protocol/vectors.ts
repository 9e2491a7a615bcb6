/**
 * Byte-exact test vectors of the agent gateway protocol, computed by this
 * code from fixed keys and nonces. `docs/protocol.md` embeds the output of
 * {@linkcode protocolVectors} and a test keeps the two equal, so a client in
 * another language can be checked against it.
 *
 *   deno run sdk/protocol/vectors.ts   # prints the vectors as JSON
 *
 * @module
 */
import {
  AGENT_CONTEXT,
  agentFinish,
  agentHello,
  b64u,
  ed25519FromSeed,
  ephemeralFromPrivate,
  NODE_CONTEXT,
  nodeWelcome,
  signedBytes,
  th1Of,
  transcript,
} from "./handshake.ts";
import { BatchWriter, encodeHeader, nextKey, RecordSealer } from "./record.ts";
import { signMessage } from "./channels.ts";
import { ed25519DidKey } from "../../core/security/ed25519.ts";

const hex = (b: Uint8Array) =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const fill = (v: number) => new Uint8Array(32).fill(v);

/** The vectors as a JSON-ready object (all binary values in lowercase hex). */
export async function protocolVectors(): Promise<Record<string, unknown>> {
  const agentKey = await ed25519FromSeed(fill(0xa1));
  const nodeKey = await ed25519FromSeed(fill(0xb2));
  const agentEph = await ephemeralFromPrivate(fill(0xc3));
  const nodeEph = await ephemeralFromPrivate(fill(0xd4));
  const agentId = ed25519DidKey(agentKey.publicRaw);
  const a = await agentHello(agentId, {
    ephemeral: agentEph,
    nonce: fill(0xe5),
  });
  const n = await nodeWelcome(a.text, { nodeId: "node-1", ...nodeKey }, {
    ephemeral: nodeEph,
    nonce: fill(0xf6),
  });
  const f = await agentFinish(a, n.text, { signingKey: agentKey.privateKey });
  const { sig: _sig, ...unsigned } = n.welcome;
  const t1 = transcript(a.hello, unsigned);
  const th1 = th1Of(a.hello, unsigned);
  const header = {
    sid: n.keys.sid,
    from: agentId,
    to: "backend",
    ch: `agent.${agentId}.heartbeat`,
    type: "msg",
    id: "m-1",
  };
  const body = new TextEncoder().encode('{"uptime":42}');
  const authBody = JSON.stringify({ sig: b64u(f.signature!) });
  const authHeader = { ...header, ch: "", type: "auth", id: "auth" };
  const sealer = new RecordSealer(f.keys.c2s);
  const authRecord = sealer.seal(
    authHeader,
    new TextEncoder().encode(authBody),
  );
  const dataRecord = sealer.seal(header, body);
  // Node → agent: a sealed batch frame at sequence 1 of keyNodeToAgent (the
  // node's `ready` took 0), an unsigned message and a node-signed one.
  const nodeSealer = new RecordSealer(n.keys.s2c);
  nodeSealer.seal({
    sid: n.keys.sid,
    from: "node:node-1",
    to: agentId,
    ch: "",
    type: "ready",
    id: "ready",
  }, new Uint8Array(0));
  const inner = [
    {
      sid: n.keys.sid,
      from: "node:node-1",
      to: agentId,
      ch: `backend.${agentId}.alerts`,
      type: "msg",
      id: "b-1",
      prio: 4,
      mt: "notification",
    },
    {
      sid: n.keys.sid,
      from: "node:node-1",
      to: agentId,
      ch: `backend.${agentId}.policies`,
      type: "msg",
      id: "b-2",
      prio: 7,
      mt: "command",
      att: 1,
    },
  ];
  const innerBodies = ['{"level":"warn"}', '{"v":2}'];
  const innerSig = await signMessage(
    nodeKey.privateKey,
    encodeHeader(inner[1]),
    new TextEncoder().encode(innerBodies[1]),
  );
  const batch = new BatchWriter();
  batch.add(inner[0], new TextEncoder().encode(innerBodies[0]));
  batch.add(inner[1], new TextEncoder().encode(innerBodies[1]), innerSig);
  const batchFrame = nodeSealer.sealBatch(batch.bytes());
  return {
    inputs: {
      agentSigningSeed: hex(fill(0xa1)),
      agentPublicKey: hex(agentKey.publicRaw),
      agentId,
      nodeSigningSeed: hex(fill(0xb2)),
      nodePublicKey: hex(nodeKey.publicRaw),
      nodeId: "node-1",
      agentEphemeralPrivate: hex(fill(0xc3)),
      agentEphemeralPublic: hex(agentEph.publicRaw),
      agentNonce: hex(fill(0xe5)),
      nodeEphemeralPrivate: hex(fill(0xd4)),
      nodeEphemeralPublic: hex(nodeEph.publicRaw),
      nodeNonce: hex(fill(0xf6)),
    },
    hello: a.text,
    welcome: n.text,
    transcript: hex(t1),
    th1: hex(th1),
    nodeSignedBytes: hex(signedBytes(NODE_CONTEXT, th1)),
    nodeSignature: hex(
      Uint8Array.fromBase64(n.welcome.sig, { alphabet: "base64url" }),
    ),
    th2: hex(n.keys.th2),
    keyAgentToNode: hex(n.keys.c2s),
    keyNodeToAgent: hex(n.keys.s2c),
    sessionId: n.keys.sid,
    agentSignedBytes: hex(signedBytes(AGENT_CONTEXT, n.keys.th2)),
    agentSignature: hex(f.signature!),
    records: {
      note:
        "agent → node, epoch 0, sealed with keyAgentToNode: the auth record (sequence 0), then a heartbeat (sequence 1)",
      authHeader: JSON.stringify(authHeader),
      authBody,
      auth: hex(authRecord),
      dataHeader: JSON.stringify(header),
      dataBody: new TextDecoder().decode(body),
      data: hex(dataRecord),
    },
    sealedBatch: {
      note:
        "node → agent, epoch 0, sequence 1 (the node's ready took 0), sealed with keyNodeToAgent, additional data = the 16 outer bytes: b-1 (its inner header without sid/from/to), then b-2, signed by the node key over its full header (kept whole in the inner record) and body",
      innerHeaders: [
        JSON.stringify(
          { ...inner[0], sid: undefined, from: undefined, to: undefined },
        ),
        JSON.stringify(inner[1]),
      ],
      bodies: innerBodies,
      signature: hex(innerSig),
      plaintext: hex(batch.bytes()),
      frame: hex(batchFrame),
    },
    rekey: {
      epoch1KeyAgentToNode: hex(nextKey(n.keys.c2s)),
    },
  };
}

if (import.meta.main) {
  console.log(JSON.stringify(await protocolVectors(), null, 2));
}
