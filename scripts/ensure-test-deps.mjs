#!/usr/bin/env node
/**
 * Run by `npm test` before the suite (the `pretest` script): makes sure the programs the suite
 * starts outside node_modules are installed. Silent and instant when they are. When one is
 * missing: as root on Debian/Ubuntu it installs it with apt-get; otherwise it names the one
 * command to run and exits 1, before any test could fail for it.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** What the suite runs, why, and the Debian package that has it. */
const REQUIREMENTS = [
  // Debian's redis-server depends on redis-tools, so it also brings the redis-cli the cluster tests use.
  { program: 'redis-server', aptPackage: 'redis-server', why: 'the Redis tests start their own redis-server' },
  { program: '/usr/bin/chromium', aptPackage: 'chromium', why: 'test/browser.test.ts drives Chromium' },
  { program: 'python3', aptPackage: 'python3', why: 'the upstream-agent tests run examples/python-agent/agent.py' },
];

function isExecutable(path) {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** A program named by path is looked for there, a bare name on PATH (as spawn does). */
function isInstalled(program) {
  if (program.includes('/')) return isExecutable(program);
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && isExecutable(join(dir, program)));
}

function missingRequirements() {
  return REQUIREMENTS.filter((requirement) => !isInstalled(requirement.program));
}

function fail(lines) {
  process.stderr.write(`${lines.join('\n')}\n`);
  process.exit(1);
}

function aptGet(args) {
  const result = spawnSync('apt-get', args, {
    stdio: 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (result.error || result.status !== 0) {
    fail([`ensure-test-deps: apt-get ${args.join(' ')} failed (${result.error?.message ?? `exit ${result.status}`})`]);
  }
}

const missing = missingRequirements();
if (missing.length > 0) {
  const packages = missing.map((requirement) => requirement.aptPackage);
  const what = missing.map((requirement) => `  ${requirement.program} (${requirement.why})`);
  if (!isInstalled('apt-get')) {
    fail(['npm test needs these programs, which are not installed:', ...what, `Install them (Debian packages: ${packages.join(' ')}).`]);
  }
  if (process.getuid?.() !== 0) {
    fail([
      'npm test needs these programs, which are not installed:',
      ...what,
      'Install them with:',
      `  sudo apt-get update && sudo apt-get install -y ${packages.join(' ')}`,
    ]);
  }
  process.stderr.write(`ensure-test-deps: installing ${packages.join(' ')} with apt-get\n`);
  aptGet(['update', '-qq']);
  aptGet(['install', '-y', '-qq', ...packages]);
  const stillMissing = missingRequirements();
  if (stillMissing.length > 0) {
    fail([`ensure-test-deps: still missing after apt-get install: ${stillMissing.map((r) => r.program).join(' ')}`]);
  }
}
