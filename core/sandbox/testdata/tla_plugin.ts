// A plugin whose module finishes evaluating only after a top-level await.
const ready = await new Promise<string>((r) =>
  setTimeout(() => r("late"), 300)
);

export default {
  manifest: {
    name: "tla",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:tla"],
  },
  setup(
    ctx: {
      http: {
        get(
          p: string,
          h: (c: { json(v: unknown): Response }) => Response,
        ): void;
      };
    },
  ) {
    ctx.http.get("/ready", (c) => c.json({ ready }));
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
};
