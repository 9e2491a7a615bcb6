# One Plexus node. Build: docker build -t plexus .   Run: docker run -p 8086:8086 -v plexus-data:/app/data plexus
FROM denoland/deno:2.9.6

WORKDIR /app
# Dependencies first so code changes do not refetch them.
COPY deno.json deno.lock ./
COPY main.ts ./
COPY core/ core/
COPY plugins/ plugins/
COPY transports/ transports/
COPY consensus/ consensus/
RUN deno install --frozen --entrypoint main.ts \
 && mkdir -p /app/data /app/plugins.d \
 && chown deno:deno /app/data

USER deno
EXPOSE 8086
VOLUME ["/app/data"]
# Only the permissions the node needs: write access is limited to its data dir.
# V8 flags: core/runtime_flags.ts (a smaller young generation: shorter GC pauses).
ENTRYPOINT ["deno", "run", "--v8-flags=--max-semi-space-size=4", "--allow-net", "--allow-read", "--allow-write=/app/data", "--allow-env", "--allow-import", "main.ts"]
CMD ["serve", "--host", "0.0.0.0", "--data-dir", "/app/data"]
