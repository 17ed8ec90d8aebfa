# One agentwire gateway node (docs/DEPLOYMENT.md).
#
# NOT BUILT HERE: the machine this file was written on has no Docker daemon. What was checked
# without Docker: the same files copied to an empty folder, `npm ci --omit=dev`, and the CMD
# below run there on Node 20 and 24, draining on SIGTERM; test/entrypoint.test.ts runs this CMD
# (as PID 1 too) on every test run.
FROM node:24-slim

WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080

# tsx, which runs the TypeScript sources, is a runtime dependency: no build step, no dev deps.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src

USER node
EXPOSE 8080

# Exec form, no shell and no npm: node is PID 1 and receives SIGTERM itself. `agentwire serve`
# handles SIGTERM and SIGINT (not-ready, drain, 1012, exit 0); a PID 1 without handlers would
# ignore them. `npm start` as PID 1 would not drain (docs/DEPLOYMENT.md).
CMD ["node", "bin/agentwire.mjs", "serve"]
