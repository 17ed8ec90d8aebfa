# One agentwire gateway node (docs/DEPLOYMENT.md).
#
# NOT BUILT HERE: the machine this file was written on has no Docker daemon. What was checked
# without Docker: a fresh clone, `npm ci && npm prune --omit=dev`, and the CMD below run there,
# draining on SIGTERM; test/entrypoint.test.ts runs this CMD (as PID 1 too) on every test run.

# Build: `npm ci` runs the `prepare` script, which compiles every package's src/ into its dist/ (tsc, esbuild);
# `npm prune` then drops the build tools.
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json ./
COPY scripts ./scripts
COPY packages ./packages
RUN npm ci --no-audit --no-fund && npm prune --omit=dev --no-audit --no-fund

FROM node:24-slim
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/packages ./packages

USER node
EXPOSE 8080

# Exec form, no shell and no npm: node is PID 1 and receives SIGTERM itself. `agentwire serve`
# handles SIGTERM and SIGINT (not-ready, drain, 1012, exit 0); a PID 1 without handlers would
# ignore them. `npm start` as PID 1 would not drain (docs/DEPLOYMENT.md).
CMD ["node", "packages/agentwire/bin/agentwire.mjs", "serve"]
