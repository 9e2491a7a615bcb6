import assert from "node:assert/strict";
import { ConfigError, FLAGS, loadConfig, serveHelp } from "./config.ts";

const files = (map: Record<string, string>) => (path: string) => {
  if (path in map) return map[path];
  throw new Deno.errors.NotFound(`No such file: ${path}`);
};

function config(
  argv: string[],
  env: Record<string, string> = {},
  fileMap: Record<string, string> = {},
) {
  const parsed = loadConfig(argv, { env, readFile: files(fileMap) });
  assert.ok(!parsed.help);
  return parsed.config;
}

function configError(
  argv: string[],
  env: Record<string, string> = {},
  fileMap: Record<string, string> = {},
): string {
  try {
    loadConfig(argv, { env, readFile: files(fileMap) });
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err.message;
  }
  assert.fail("no ConfigError");
}

Deno.test("config: defaults match the contract", () => {
  const c = config([]);
  assert.equal(c.port, 8086);
  assert.equal(c.host, "127.0.0.1");
  assert.equal(c.dataDir, "./data");
  assert.equal(c.kv, "data/plexus.kv");
  assert.equal(c.pluginsDir, "./plugins.d");
  assert.deepEqual(c.plugins, []);
  assert.equal(c.logStream.replay, 100);
  assert.equal(c.logStream.heartbeatMs, 30_000);
});

Deno.test("config: precedence is defaults < file < env < flags", () => {
  const file = {
    "c.json": JSON.stringify({
      port: 1000,
      host: "0.0.0.0",
      logLevel: "debug",
      nodeId: "from-file",
    }),
  };
  const env = {
    PLEXUS_PORT: "2000",
    PLEXUS_HOST: "::1",
    PLEXUS_CONFIG: "c.json",
  };
  const c = config(["--port", "3000"], env, file);
  assert.equal(c.port, 3000, "flag beats env");
  assert.equal(c.host, "::1", "env beats file");
  assert.equal(c.logLevel, "debug", "file beats default");
  assert.equal(c.nodeId, "from-file");
  assert.equal(
    c.shutdownTimeoutMs,
    10_000,
    "default stays when nobody sets it",
  );
  assert.equal(config([], env, file).port, 2000);
  assert.equal(config(["--config", "c.json"], {}, file).port, 1000);
});

Deno.test("config: list flags repeat on the command line and split on commas in env", () => {
  assert.deepEqual(
    config(["--plugin", "./a.ts", "--plugin", "builtin:x"]).plugins,
    ["./a.ts", "builtin:x"],
  );
  assert.deepEqual(config([], { PLEXUS_PLUGINS: "./a.ts, ./b.ts" }).plugins, [
    "./a.ts",
    "./b.ts",
  ]);
  assert.deepEqual(config(["--peers", "http://a:1,http://b:2"]).peers, [
    "http://a:1",
    "http://b:2",
  ]);
});

Deno.test("config: --kv defaults under --data-dir but an explicit --kv wins", () => {
  assert.equal(config(["--data-dir", "/tmp/x"]).kv, "/tmp/x/plexus.kv");
  assert.equal(
    config(["--data-dir", "/tmp/x", "--kv", ":memory:"]).kv,
    ":memory:",
  );
});

Deno.test("config: errors name the flag, env variable or field and the value seen", () => {
  assert.equal(
    configError(["--port", "abc"]),
    "flag --port: expected an integer, got 'abc'",
  );
  assert.match(
    configError(["--port", "70000"]),
    /^--port: .*got 70000 from flag --port/,
  );
  assert.equal(
    configError([], { PLEXUS_PORT: "abc" }),
    "env PLEXUS_PORT: expected an integer, got 'abc'",
  );
  assert.match(
    configError([], { PLEXUS_LOG_LEVEL: "loud" }),
    /^PLEXUS_LOG_LEVEL: .*got "loud" from env PLEXUS_LOG_LEVEL/,
  );
  assert.match(
    configError(["--peers", "ftp://x"]),
    /^--peers: .*got "ftp:\/\/x"/,
  );
  assert.match(
    configError(["--node-id", "bad id"]),
    /^--node-id: expected 1-64 letters/,
  );
  const file = { "c.json": JSON.stringify({ logStream: { replay: -1 } }) };
  assert.match(
    configError(["--config", "c.json"], {}, file),
    /^logStream\.replay: .*got -1 from config file c\.json/,
  );
});

Deno.test("config: bad flags, files and fields are ConfigErrors with one clear line", () => {
  assert.equal(configError(["--bogus"]), "unknown flag --bogus (see --help)");
  assert.equal(configError(["--port"]), "flag --port needs a value");
  assert.equal(
    configError(["stray"]),
    "unexpected argument 'stray' (see --help)",
  );
  assert.match(
    configError(["--config", "missing.json"]),
    /^--config: cannot read 'missing\.json'/,
  );
  assert.match(
    configError(["--config", "c.json"], {}, { "c.json": "{port:" }),
    /^--config: 'c\.json' is not valid JSON/,
  );
  assert.match(
    configError(["--config", "c.json"], {}, { "c.json": "[1]" }),
    /must hold a JSON object, got \[1\]/,
  );
  assert.equal(
    configError(["--config", "c.json"], {}, { "c.json": '{"prot": 1}' }),
    "config file c.json: unknown field 'prot' (did you mean 'port'?)",
  );
  for (const msg of [configError(["--bogus"]), configError(["--port", "x"])]) {
    assert.ok(!msg.includes("\n"));
  }
});

Deno.test("config: an unknown field in the file names the file and the field it most likely meant", () => {
  const file = (json: unknown) => ({ "c.json": JSON.stringify(json) });
  const error = (json: unknown) =>
    configError(["--config", "c.json"], {}, file(json));
  // The case: a flag's name where the file wants the field's.
  assert.equal(
    error({ plugin: ["./a.ts"] }),
    "config file c.json: unknown field 'plugin' (did you mean 'plugins'?)",
  );
  assert.equal(
    error({ "node-id": "a", "log-level": "debug" }),
    "config file c.json: unknown fields 'node-id', 'log-level' (did you mean 'nodeId', 'logLevel'?)",
  );
  assert.equal(
    error({ pluginconfig: {} }),
    "config file c.json: unknown field 'pluginconfig' (did you mean 'pluginConfig'?)",
  );
  // Inside a section: the section's own fields.
  assert.equal(
    error({ http: { corsOrigin: [] } }),
    "config file c.json: unknown field 'http.corsOrigin' (did you mean 'http.corsOrigins'?)",
  );
  assert.equal(
    error({ logStream: { bogus: 1 } }),
    "config file c.json: unknown field 'logStream.bogus' (known here: replay, heartbeatMs, maxBufferedBytes)",
  );
  // PLEXUS_CONFIG names the file the same way.
  assert.match(
    configError([], { PLEXUS_CONFIG: "c.json" }, file({ plugin: [] })),
    /^config file c\.json: unknown field 'plugin'/,
  );
});

Deno.test("config: __proto__ and constructor keys are refused at every depth of the file, naming the path", () => {
  // Pairs, not an object literal: `{"__proto__": …}` there would set a prototype.
  const refused: [path: string, json: string][] = [
    ["__proto__", '{"__proto__": {"polluted": true}, "port": 1}'],
    ["constructor", '{"constructor": {"prototype": {"polluted": true}}}'],
    ["logStream.__proto__", '{"logStream": {"__proto__": {"replay": 1}}}'],
    ["pluginConfig.__proto__", '{"pluginConfig": {"__proto__": {"x": 1}}}'],
    [
      "pluginConfig.hello.constructor",
      '{"pluginConfig": {"hello": {"constructor": {"prototype": {}}}}}',
    ],
    [
      "pluginConfig.hello.list.1.__proto__",
      '{"pluginConfig": {"hello": {"list": [{}, {"__proto__": {}}]}}}',
    ],
    [
      "pluginConfig.gateway.channels.__proto__",
      '{"pluginConfig": {"gateway": {"channels": {"__proto__": {"subscribe": ["agent"]}}}}}',
    ],
  ];
  for (const [path, json] of refused) {
    assert.equal(
      configError(["--config", "c.json"], {}, { "c.json": json }),
      `config file c.json: field '${path}' is not allowed (__proto__ and constructor keys are refused at any depth)`,
    );
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  // As values, and as part of longer names, they are ordinary.
  const c = config(["--config", "c.json"], {}, {
    "c.json": JSON.stringify({
      nodeId: "constructor",
      pluginConfig: { hello: { greeting: "__proto__", constructorName: "x" } },
    }),
  });
  assert.equal(c.nodeId, "constructor");
  assert.deepEqual(c.pluginConfig.hello, {
    greeting: "__proto__",
    constructorName: "x",
  });
});

Deno.test("config: --help lists every flag with its default", () => {
  assert.deepEqual(loadConfig(["--help"], { env: {} }), { help: true });
  const help = serveHelp();
  for (const f of FLAGS) {
    const line = help.split("\n").find((l) =>
      l.trimStart().startsWith(
        f.type === "boolean" ? `--[no-]${f.flag} ` : `--${f.flag} `,
      )
    );
    assert.ok(line, `--${f.flag} missing from help`);
    assert.ok(
      line.includes(`default ${f.shownDefault}`),
      `--${f.flag} default missing`,
    );
    if (f.env) assert.ok(line.includes(f.env));
  }
  assert.match(help, /--config FILE\.json/);
});

Deno.test("config: a flag followed by another flag asks for a value on one line", () => {
  const msg = configError(["--plugin", "--port", "1"]);
  assert.match(
    msg,
    /^flag --plugin needs a value \(write --plugin=VALUE for one starting with '-'\)$/,
  );
});

Deno.test("config: the gateway plugin is on by default; --no-gateway, PLEXUS_GATEWAY=false or false in the file turn it off; the old settings block is refused naming its new home", () => {
  assert.equal(config([]).gateway, true);
  assert.equal(config(["--no-gateway"]).gateway, false);
  assert.equal(config(["--gateway"], { PLEXUS_GATEWAY: "off" }).gateway, true);
  assert.equal(config([], { PLEXUS_GATEWAY: "false" }).gateway, false);
  assert.equal(
    config(["--config", "c.json"], {}, { "c.json": '{"gateway": false}' })
      .gateway,
    false,
  );
  assert.equal(
    configError([], { PLEXUS_GATEWAY: "maybe" }),
    "env PLEXUS_GATEWAY: expected true or false, got 'maybe'",
  );
  assert.equal(
    configError(["--gateway", "--no-gateway"]),
    "--gateway and --no-gateway contradict each other",
  );
  assert.match(
    configError(["--config", "c.json"], {}, {
      "c.json": '{"gateway": {"heartbeatMs": 1000}}',
    }),
    /config file c\.json: 'gateway' is now true or false .*'pluginConfig\.gateway'/,
  );
  assert.match(serveHelp(), /--\[no-\]gateway/);
});

Deno.test("config: pluginTrust and pluginGrants default to empty", () => {
  const c = config([]);
  assert.deepEqual(c.pluginTrust, {});
  assert.deepEqual(c.pluginGrants, {});
});

Deno.test("config: --plugin-trust NAME=LEVEL repeats, splits on commas, and fills pluginTrust", () => {
  assert.deepEqual(
    config([
      "--plugin-trust",
      "fetcher=worker",
      "--plugin-trust",
      "audit=trusted, heavy=process",
      "--plugin-trust=@acme/x=worker",
    ]).pluginTrust,
    {
      fetcher: "worker",
      audit: "trusted",
      heavy: "process",
      "@acme/x": "worker",
    },
  );
  assert.deepEqual(
    config([], { PLEXUS_PLUGIN_TRUST: "a=worker, b = trusted" }).pluginTrust,
    { a: "worker", b: "trusted" },
  );
  assert.deepEqual(
    config(["--plugin-trust", "a=worker", "--plugin-trust", "a=trusted"])
      .pluginTrust,
    { a: "trusted" },
    "the last one for a name wins",
  );
});

Deno.test("config: pluginTrust is merged per name: flags override env override file", () => {
  const file = {
    "c.json": JSON.stringify({
      pluginTrust: { a: "worker", b: "worker", c: "worker" },
    }),
  };
  const env = {
    PLEXUS_CONFIG: "c.json",
    PLEXUS_PLUGIN_TRUST: "b=process,a=process",
  };
  assert.deepEqual(
    config(
      ["--plugin-trust", "a=trusted", "--plugin-trust", "d=process"],
      env,
      file,
    )
      .pluginTrust,
    { a: "trusted", b: "process", c: "worker", d: "process" },
  );
  assert.deepEqual(config([], env, file).pluginTrust, {
    a: "process",
    b: "process",
    c: "worker",
  });
  assert.deepEqual(config(["--config", "c.json"], {}, file).pluginTrust, {
    a: "worker",
    b: "worker",
    c: "worker",
  });
});

Deno.test("config: a bad trust level or a malformed NAME=LEVEL is a ConfigError naming the flag, variable or field and the value", () => {
  assert.equal(
    configError(["--plugin-trust", "fetcher"]),
    "flag --plugin-trust: expected NAME=LEVEL, got 'fetcher'",
  );
  assert.equal(
    configError(["--plugin-trust", "=worker"]),
    "flag --plugin-trust: expected NAME=LEVEL, got '=worker'",
  );
  assert.equal(
    configError(["--plugin-trust", "a=worker,b="]),
    "flag --plugin-trust: expected NAME=LEVEL, got 'b='",
  );
  assert.match(
    configError([], { PLEXUS_PLUGIN_TRUST: "a=worker;b=worker" }),
    /^PLEXUS_PLUGIN_TRUST: .*got "worker;b=worker" from env PLEXUS_PLUGIN_TRUST \(field 'pluginTrust\.a'\)$/,
  );
  assert.match(
    configError(["--plugin-trust", "fetcher=sandboxed"]),
    /^--plugin-trust: .*"trusted"\|"worker"\|"process".*got "sandboxed" from flag --plugin-trust \(field 'pluginTrust\.fetcher'\)$/,
  );
  assert.match(
    configError([], { PLEXUS_PLUGIN_TRUST: "a=worker,b=Trusted" }),
    /^PLEXUS_PLUGIN_TRUST: .*got "Trusted" from env PLEXUS_PLUGIN_TRUST \(field 'pluginTrust\.b'\)$/,
  );
  // A bad level in the file is blamed on the file, even when a flag sets another name.
  assert.match(
    configError(["--config", "c.json", "--plugin-trust", "a=worker"], {}, {
      "c.json": JSON.stringify({ pluginTrust: { b: "yes" } }),
    }),
    /^pluginTrust\.b: .*got "yes" from config file c\.json$/,
  );
  assert.equal(
    configError(["--plugin-trust", "__proto__=trusted"]),
    "flag --plugin-trust: name '__proto__' is not allowed, got '__proto__=trusted'",
  );
  assert.equal(({} as Record<string, unknown>).trusted, undefined);
});

Deno.test("config: pluginGrants holds a permission spec per plugin, checked like a manifest's permissions", () => {
  const grants = {
    fetcher: {
      net: ["api.example.com", "db:5432"],
      env: ["TOKEN"],
      read: false,
    },
    audit: { write: true },
  };
  const c = config(["--config", "c.json"], {}, {
    "c.json": JSON.stringify({ pluginGrants: grants }),
  });
  assert.deepEqual(c.pluginGrants, grants);
  const error = (json: unknown) =>
    configError(["--config", "c.json"], {}, { "c.json": JSON.stringify(json) });
  assert.equal(
    error({ pluginGrants: { fetcher: { nett: true } } }),
    "config file c.json: unknown field 'pluginGrants.fetcher.nett' (did you mean 'pluginGrants.fetcher.net'?)",
  );
  assert.equal(
    error({ pluginGrants: { fetcher: { network: true } } }),
    "config file c.json: unknown field 'pluginGrants.fetcher.network' (known here: read, write, net, env, sys, run, ffi, import)",
  );
  assert.equal(
    error({ pluginGrants: { fetcher: { net: "api.example.com" } } }),
    'pluginGrants.fetcher.net: expected true, false or a list of strings, got "api.example.com" from config file c.json',
  );
  assert.match(
    error({ pluginGrants: { fetcher: true } }),
    /^pluginGrants\.fetcher: .*got true from config file c\.json$/,
  );
  assert.match(
    error({ pluginGrants: ["fetcher"] }),
    /^pluginGrants: .*from config file c\.json$/,
  );
});

Deno.test("config: --plugin-trust is in --help with its variable and default", () => {
  const line = serveHelp().split("\n").find((l) =>
    l.includes("--plugin-trust ")
  );
  assert.ok(line);
  assert.match(line, /--plugin-trust NAME=LEVEL\.\.\./);
  assert.match(line, /PLEXUS_PLUGIN_TRUST/);
  assert.match(line, /default trusted for builtin:, else worker/);
});

Deno.test("config: pluginIntegrity and allowUnpinnedPlugins (flag, env, file; off by default)", () => {
  const c = config([]);
  assert.deepEqual(c.pluginIntegrity, {});
  assert.equal(c.allowUnpinnedPlugins, false);
  const pin = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
  const npmPin =
    "sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cGvNp6NZWZUBlbGXYxxng==";
  const file = {
    "c.json": JSON.stringify({
      pluginIntegrity: {
        "https://plugins.example.com/a.js": pin,
        "npm:is-number@7.0.0": npmPin,
      },
    }),
  };
  assert.deepEqual(config(["--config", "c.json"], {}, file).pluginIntegrity, {
    "https://plugins.example.com/a.js": pin,
    "npm:is-number@7.0.0": npmPin,
  });
  assert.equal(config(["--allow-unpinned-plugins"]).allowUnpinnedPlugins, true);
  assert.equal(
    config([], { PLEXUS_ALLOW_UNPINNED_PLUGINS: "true" }).allowUnpinnedPlugins,
    true,
  );
  assert.equal(
    config(["--no-allow-unpinned-plugins"], {
      PLEXUS_ALLOW_UNPINNED_PLUGINS: "1",
    }).allowUnpinnedPlugins,
    false,
    "the flag beats the environment",
  );
  assert.match(serveHelp(), /--\[no-\]allow-unpinned-plugins/);
});

Deno.test("config: a bad pluginIntegrity value is a ConfigError naming the field and the value", () => {
  const bad = (value: string) =>
    configError(["--config", "c.json"], {}, {
      "c.json": JSON.stringify({
        pluginIntegrity: { "https://h.example/p.js": value },
      }),
    });
  for (
    const value of [
      "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", // no algorithm
      "md5-1B2M2Y8AsgTpgAmY7PhCfg==", // not offered
      "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", // unpadded
      "sha512-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", // 32 bytes, not 64
      "sha256-not base64!",
    ]
  ) {
    const message = bad(value);
    assert.match(
      message,
      /^pluginIntegrity\.https:\/\/h\.example\/p\.js: expected an SRI digest/,
      value,
    );
    assert.ok(message.includes(`got ${JSON.stringify(value)}`), message);
  }
  assert.match(
    configError(["--allow-unpinned-plugins=yes"]),
    /allow-unpinned-plugins/,
  );
});

Deno.test("config: sealed rules may name agent recipients, with a deliver channel; without one, or with a bad channel, it is a ConfigError", () => {
  const file = (topics: unknown) => ({
    "c.json": JSON.stringify({ sealed: { topics } }),
  });
  const agentRule = {
    pattern: "ops.keys",
    recipients: ["agent:did:key:z6MkAbc", "node:n1"],
    deliver: { channel: "sealed" },
  };
  assert.deepEqual(
    config(["--config", "c.json"], {}, file([agentRule])).sealed.topics,
    [agentRule],
  );
  assert.match(
    configError(
      ["--config", "c.json"],
      {},
      file([{ pattern: "ops.keys", recipients: ["agent:a1"] }]),
    ),
    /sealed\.topics\.0.*needs 'deliver'/,
  );
  assert.match(
    configError(
      ["--config", "c.json"],
      {},
      file([{
        ...agentRule,
        deliver: { channel: "backend.x.sealed!" },
      }]),
    ),
    /deliver\.channel.*channel name/,
  );
  assert.match(
    configError(
      ["--config", "c.json"],
      {},
      file([{
        ...agentRule,
        recipients: ["agent:a.b"],
      }]),
    ),
    /'agent:' and an agent id/,
  );
});

Deno.test("config: sealed.worker is off unless set, and must be a boolean", () => {
  const file = (sealed: unknown) => ({ "c.json": JSON.stringify({ sealed }) });
  assert.equal(config([], {}, {}).sealed.worker, false);
  assert.equal(
    config(["--config", "c.json"], {}, file({ worker: true })).sealed.worker,
    true,
  );
  assert.match(
    configError(["--config", "c.json"], {}, file({ worker: "yes" })),
    /sealed\.worker/,
  );
});
