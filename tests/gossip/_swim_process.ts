/**
 * A driver-only gossip member for the real-process tests: runs one
 * {@linkcode GossipDriver} and prints one JSON line per membership event.
 *
 * Usage: `deno run --allow-net --allow-env _swim_process.ts '{"id":"s1",
 * "port":9001,"advertise":"127.0.0.1:9101","seeds":[...],"config":{...}}'`
 * with the cluster secret in PLEXUS_MESH_SECRET.
 *
 * @module
 */
import { GossipDriver } from "../../consensus/gossip/driver.ts";

const opts = JSON.parse(Deno.args[0]);
const driver = await GossipDriver.start({
  id: opts.id,
  port: opts.port,
  advertise: opts.advertise,
  secret: Deno.env.get("PLEXUS_MESH_SECRET") ?? "",
  config: opts.config,
  log: (level, msg) => console.log(JSON.stringify({ log: level, msg })),
});
const print = (o: object) =>
  console.log(JSON.stringify({ ...o, t: Date.now() }));
driver.onEvent((e) =>
  print({
    ev: e.type,
    id: e.id,
    inc: e.incarnation,
    self: driver.node.incarnation,
  })
);
driver.join(opts.seeds);
print({ ready: driver.addr, udp: driver.udpApi });
