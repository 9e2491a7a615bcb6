import assert from "node:assert/strict";
import { RespConnection } from "./resp.ts";
import { respTlsOf } from "./transport.ts";
import { makeCerts } from "../../tests/_certs.ts";

function has(cmd: string, ...args: string[]): boolean {
  try {
    return new Deno.Command(cmd, { args, stdout: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}
const tools = has("redis-server", "--version") && has("openssl", "version");

Deno.test("respTlsOf: TLS our reader can do, and what it leaves to ioredis", () => {
  assert.equal(respTlsOf(undefined), null);
  assert.equal(respTlsOf(false), null);
  assert.deepEqual(respTlsOf(true), {});
  assert.deepEqual(respTlsOf({}), {});
  assert.deepEqual(respTlsOf({ ca: "PEM" }), { caCerts: ["PEM"] });
  assert.deepEqual(
    respTlsOf({ ca: [new TextEncoder().encode("A"), "B"] }),
    { caCerts: ["A", "B"] },
  );
  assert.deepEqual(respTlsOf({ servername: "r.example" }, "r.example"), {});
  assert.equal(respTlsOf({ servername: "other" }, "r.example"), undefined);
  assert.equal(respTlsOf({ rejectUnauthorized: false }), undefined);
  assert.equal(respTlsOf({ cert: "C", key: "K" }), undefined);
  assert.equal(respTlsOf({ ca: 1 }), undefined);
});

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test({
  name:
    "redis-streams over TLS: our reader verifies the server's certificate, and a subscription reads over it",
  ignore: !tools,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "plexus-redis-tls-" });
    const certs = await makeCerts(dir);
    const ca = await Deno.readTextFile(certs.ca);
    const port = freePort();
    const server = new Deno.Command("redis-server", {
      args: [
        "--port",
        "0",
        "--tls-port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        certs.cert,
        "--tls-key-file",
        certs.key,
        "--tls-ca-cert-file",
        certs.ca,
        "--tls-auth-clients",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
      ],
      cwd: dir,
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const trusting = new RespConnection({
        host: "127.0.0.1",
        port,
        tls: { caCerts: [ca] },
      });
      let pong: unknown;
      for (let i = 0; i < 100 && pong === undefined; i++) {
        pong = await trusting.command(["PING"], 1000).catch(() => undefined);
        if (pong === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      trusting.close();
      assert.equal(pong, "PONG");
      // Without the CA the certificate is refused.
      const doubting = new RespConnection({ host: "127.0.0.1", port, tls: {} });
      await assert.rejects(
        () => doubting.command(["PING"], 2000),
        /certificate|issuer/i,
      );
      doubting.close();
      // The transport in a process that trusts the CA (DENO_CERT), as a user
      // of a managed Redis with a private CA runs it.
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-net",
          "--allow-env",
          "--allow-read",
          new URL("./testdata/tls_roundtrip.ts", import.meta.url).pathname,
          `rediss://127.0.0.1:${port}`,
        ],
        env: { DENO_CERT: certs.ca },
        stderr: "inherit",
      }).output();
      assert.ok(out.success, "the round trip process failed");
      const got = JSON.parse(
        new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!,
      );
      assert.deepEqual(got, { received: 20, reader: {} });
    } finally {
      server.kill();
      await server.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});
