#!/usr/bin/env node
// The `distrifusion` command. Errors print as `distrifusion: <message>` with exit code 1; the stack trace
// only with DISTRIFUSION_DEBUG=1.
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
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

await main(process.argv);
