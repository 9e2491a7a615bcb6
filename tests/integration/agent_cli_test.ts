/**
 * The `keygen` and `agent` subcommands as real processes with least
 * privilege: `keygen` with no permissions at all, `agent` with network
 * access to loopback and read access to its key file only. The live runs
 * use the SDK's in-test gateway (sdk/_test_gateway.ts).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ed25519DidKey } from "../../core/security/ed25519.ts";
import { startTestGateway } from "../../sdk/_test_gateway.ts";
import { deadline, EXIT_TIMEOUT_MS, runMain, spawnMain } from "./_process.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-agent-it-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function oneLine(stderr: string): string {
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, `exactly one stderr line, got:\n${stderr}`);
  assert.match(lines[0], /^plexus: /);
  return lines[0];
}

const AGENT_PERMISSIONS = ["--allow-net", "--allow-read"];

Deno.test("agent cli: keygen prints one JSON key whose did:key id matches its public key, with no permissions", async () => {
  await withDir(async (dir) => {
    const r = await runMain(dir, [], ["keygen"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.length, 1, "exactly one stdout line");
    const key = JSON.parse(lines[0]);
    assert.deepEqual(Object.keys(key), ["id", "publicKey", "privateKey"]);
    const publicKey = Uint8Array.fromBase64(key.publicKey, {
      alphabet: "base64url",
    });
    const seed = Uint8Array.fromBase64(key.privateKey, {
      alphabet: "base64url",
    });
    assert.equal(publicKey.length, 32);
    assert.equal(seed.length, 32);
    assert.equal(key.id, ed25519DidKey(publicKey));
    // The public key is the seed's.
    const jwk = await crypto.subtle.exportKey(
      "jwk",
      await crypto.subtle.importKey(
        "pkcs8",
        Uint8Array.from([
          ...Uint8Array.fromHex("302e020100300506032b657004220420"),
          ...seed,
        ]),
        "Ed25519",
        true,
        ["sign"],
      ),
    );
    assert.equal(jwk.x, key.publicKey);
    const again = JSON.parse(
      (await runMain(dir, [], ["keygen"])).stdout,
    );
    assert.notEqual(again.privateKey, key.privateKey, "a fresh key each run");
  });
});

Deno.test("agent cli: keygen --help prints usage; a bad flag exits 2 naming it", async () => {
  await withDir(async (dir) => {
    const help = await runMain(dir, [], ["keygen", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: plexus keygen/);
    const bad = await runMain(dir, [], ["keygen", "--bits", "4096"]);
    assert.equal(bad.code, 2);
    assert.match(oneLine(bad.stderr), /--bits/);
    assert.equal(bad.stdout, "");
  });
});

Deno.test("agent cli: bad agent flags exit 2 with one line naming the flag", async () => {
  await withDir(async (dir) => {
    const keyFile = join(dir, "agent.json");
    await Deno.writeTextFile(
      keyFile,
      (await runMain(dir, [], ["keygen"])).stdout,
    );
    const url = "ws://127.0.0.1:9/ws/agent";
    const cases: [string[], RegExp][] = [
      [["--key", keyFile], /--url: required/],
      [["--url", url], /--key: required/],
      [["--url", "ftp://x", "--key", keyFile], /--url: .*ftp:/],
      [["--url", url, "--key", keyFile, "--bogus"], /unknown flag --bogus/],
      [["--url", url, "--key", keyFile, "--subscribe"], /--subscribe/],
      [["--url", url, "--key", keyFile, "--subscribe", "a..b"], /--subscribe/],
      [
        ["--url", url, "--key", keyFile, "--subscribe", "backend.other.x"],
        /--subscribe/,
      ],
      [["--url", url, "--key", keyFile, "--id", "a.b"], /--id/],
      [["--url", url, "--key", keyFile, "--node-key", "zz"], /--node-key/],
      [["--url", url, "--key", keyFile, "extra"], /unexpected argument/],
    ];
    for (const [args, pattern] of cases) {
      const r = await runMain(dir, AGENT_PERMISSIONS, ["agent", ...args]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(oneLine(r.stderr), pattern, args.join(" "));
      assert.equal(r.stdout, "");
    }
    const help = await runMain(dir, AGENT_PERMISSIONS, ["agent", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--subscribe TOPIC/);
  });
});

Deno.test("agent cli: a missing, unreadable or malformed key file exits 2 naming the file", async () => {
  await withDir(async (dir) => {
    const url = "ws://127.0.0.1:9/ws/agent";
    const missing = join(dir, "missing.json");
    const malformed = join(dir, "malformed.json");
    await Deno.writeTextFile(malformed, '{"privateKey": "short"}');
    const notJson = join(dir, "not-json.json");
    await Deno.writeTextFile(notJson, "{ nope");
    for (const file of [missing, malformed, notJson]) {
      const r = await runMain(dir, AGENT_PERMISSIONS, [
        "agent",
        "--url",
        url,
        "--key",
        file,
      ]);
      assert.equal(r.code, 2, r.stderr);
      const line = oneLine(r.stderr);
      assert.match(line, /--key/);
      assert.ok(line.includes(file), `names ${file}: ${line}`);
    }
    // Without --allow-read the key file cannot be read: the same exit.
    const key = join(dir, "agent.json");
    await Deno.writeTextFile(key, (await runMain(dir, [], ["keygen"])).stdout);
    const r = await runMain(dir, ["--allow-net"], [
      "agent",
      "--url",
      url,
      "--key",
      key,
    ]);
    assert.equal(r.code, 2);
    assert.ok(oneLine(r.stderr).includes(key));
  });
});

/** Reads a child's stdout line by line. */
function lineReader(stream: ReadableStream<Uint8Array>) {
  const lines: string[] = [];
  let waiting: (() => void) | undefined;
  const done = (async () => {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      let nl: number;
      while ((nl = rest.indexOf("\n")) >= 0) {
        lines.push(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
        waiting?.();
      }
    }
    if (rest) lines.push(rest);
    waiting?.();
  })();
  return {
    lines,
    done,
    async waitFor(n: number, what: string): Promise<void> {
      await deadline(
        (async () => {
          while (lines.length < n) {
            await new Promise<void>((r) => waiting = r);
          }
        })(),
        EXIT_TIMEOUT_MS,
        what,
      );
    },
  };
}

Deno.test("agent cli: the demo agent prints each message as a JSON line, acknowledges it, and exits 0 on SIGTERM", async () => {
  await using gw = await startTestGateway({ subscribe: ["commands"] });
  await withDir(async (dir) => {
    const keyFile = join(dir, "agent.json");
    const keyText = (await runMain(dir, [], ["keygen"])).stdout;
    await Deno.writeTextFile(keyFile, keyText);
    const key = JSON.parse(keyText);
    gw.enrol(key.id, key.publicKey);
    // Queued before the agent runs: delivered right after its handshake.
    gw.send(key.id, "commands", { run: "inventory" }, {
      id: "c-1",
      priority: 7,
      type: "command",
    });
    const child = await spawnMain(
      dir,
      ["--allow-net=127.0.0.1", `--allow-read=${keyFile}`],
      [
        "agent",
        "--url",
        gw.url.replace("/ws/agent", ""),
        "--key",
        keyFile,
        "--subscribe",
        "commands",
      ],
    );
    const stdout = lineReader(child.stdout);
    let stderr = "";
    const stderrDone = (async () => {
      for await (
        const chunk of child.stderr.pipeThrough(new TextDecoderStream())
      ) stderr += chunk;
    })();
    try {
      await stdout.waitFor(1, "the first message line");
      gw.send(key.id, "commands", { run: "restart" }, { id: "c-2" });
      await stdout.waitFor(2, "the second message line");
      const [first, second] = stdout.lines.map((l) => JSON.parse(l));
      assert.deepEqual(
        { ...first, receivedAt: undefined },
        {
          channel: `backend.${key.id}.commands`,
          type: "command",
          id: "c-1",
          payload: { run: "inventory" },
          priority: 7,
          signed: false,
          receivedAt: undefined,
        },
      );
      assert.equal(second.id, "c-2");
      await gw.waitFor((r) => r.header.type === "ack" && r.header.re === "c-2");
      assert.deepEqual(gw.outbox(key.id), [], "both acknowledged");
    } finally {
      child.kill("SIGTERM");
    }
    const status = await deadline(child.status, EXIT_TIMEOUT_MS, "exit");
    await Promise.all([stdout.done, stderrDone]);
    assert.equal(status.code, 0, stderr);
    assert.match(stderr, /plexus agent: ready: node node-test/);
    assert.match(stderr, /subscribed to backend\./);
    assert.match(stderr, /SIGTERM: closing/);
    assert.equal(stdout.lines.length, 2, "nothing else on stdout");
  });
});

Deno.test("agent cli: an agent the node does not know exits 1 after the 4401, without retrying", async () => {
  await using gw = await startTestGateway();
  await withDir(async (dir) => {
    const keyFile = join(dir, "agent.json");
    await Deno.writeTextFile(
      keyFile,
      (await runMain(dir, [], ["keygen"])).stdout,
    );
    const r = await runMain(
      dir,
      ["--allow-net=127.0.0.1", `--allow-read=${keyFile}`],
      ["agent", "--url", gw.url, "--key", keyFile],
    );
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /plexus: agent stopped: .*4401/);
    assert.equal(r.stdout, "");
    assert.equal(gw.handshakes.length, 1);
  });
});
