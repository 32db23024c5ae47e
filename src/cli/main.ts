#!/usr/bin/env node
// The `distrifusion` command. Errors print as `distrifusion: <message>` with exit code 1; the stack trace
// only with DISTRIFUSION_DEBUG=1.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { Command, CommanderError } from 'commander';
import { withRankMallocTunables } from '../parallel/malloc-tunables.js';
import { registerBenchCommand } from './bench-command.js';
import { registerGenerateCommand } from './generate-command.js';

/** The package version; package.json is two folders up from both src/cli and dist/cli. */
function packageVersion(): string {
  const pkg: unknown = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  const v = (pkg as { version?: unknown }).version;
  return typeof v === 'string' ? v : 'unknown';
}

function createProgram(): Command {
  const program = new Command('distrifusion')
    .description('Stable Diffusion / SDXL on Node.js, with DistriFusion patch parallelism across ranks')
    .version(packageVersion())
    // Set before the subcommands are added: they inherit these.
    .configureOutput({ outputError: (str, write) => write(`distrifusion: ${str.replace(/^error: /, '')}`) })
    .exitOverride()
    .showSuggestionAfterError();
  registerGenerateCommand(program);
  registerBenchCommand(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  try {
    await createProgram().parseAsync(argv);
  } catch (e) {
    // Commander has printed its own message (usage errors) or the help / version text already.
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode;
      return;
    }
    const debug = process.env.DISTRIFUSION_DEBUG === '1';
    const message = e instanceof Error ? (debug ? (e.stack ?? e.message) : e.message) : String(e);
    process.stderr.write(`distrifusion: ${message}\n`);
    process.exitCode = 1;
  }
}

/**
 * Runs this command again in a child process whose environment carries the ranks' glibc malloc settings
 * (see parallel/malloc-tunables.ts; glibc reads them only at start-up). Resolves to its exit code, or to
 * undefined where no relaunch is needed: not Linux, the settings already there, or
 * DISTRIFUSION_MALLOC_TUNABLES=0.
 */
function relaunchWithMallocTunables(): Promise<number> | undefined {
  const env = withRankMallocTunables(process.env);
  if (!env) return undefined;
  if (process.env.DISTRIFUSION_DEBUG === '1') {
    process.stderr.write(`distrifusion: relaunching with GLIBC_TUNABLES=${env.GLIBC_TUNABLES}\n`);
  }
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env,
  });
  // A terminal's Ctrl-C reaches the child too (same process group); it cleans up and exits on its own.
  process.on('SIGINT', () => {});
  for (const signal of ['SIGTERM', 'SIGHUP'] as const) process.on(signal, () => child.kill(signal));
  return new Promise((resolve) => {
    child.on('error', (e) => {
      process.stderr.write(`distrifusion: cannot relaunch ${process.execPath}: ${e.message}\n`);
      resolve(1);
    });
    child.on('exit', (code, signal) =>
      resolve(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : 1)),
    );
  });
}

const relaunched = relaunchWithMallocTunables();
if (relaunched) process.exitCode = await relaunched;
else await main(process.argv);
