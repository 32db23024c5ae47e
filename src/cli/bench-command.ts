import type { Command } from 'commander';

/** Registers `distrifusion bench` (placeholder until the benchmark lands). */
export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('benchmarks (not implemented yet)')
    .action(() => {
      throw new Error('bench: not implemented yet');
    });
}
