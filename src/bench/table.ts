// Plain-text tables and the small statistics the benchmarks print.

export type Align = 'left' | 'right';

export interface Column {
  header: string;
  align?: Align;
}

/** A table with a header rule, columns padded to their widest cell (numbers right-aligned by default). */
export function renderTable(columns: readonly Column[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = columns.map((c, i) => Math.max(c.header.length, ...rows.map((r) => (r[i] ?? '').length)));
  const pad = (s: string, i: number): string => {
    const align = columns[i]!.align ?? (i === 0 ? 'left' : 'right');
    return align === 'left' ? s.padEnd(widths[i]!) : s.padStart(widths[i]!);
  };
  const line = (cells: readonly string[]) =>
    columns
      .map((_, i) => pad(cells[i] ?? '', i))
      .join('  ')
      .trimEnd();
  return [
    line(columns.map((c) => c.header)),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map(line),
  ].join('\n');
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A number for a table cell: '-' when absent or not finite. */
export function fmt(v: number | undefined, digits = 0): string {
  return v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits);
}

export function fmtBytes(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  if (v >= 2 ** 30) return `${(v / 2 ** 30).toFixed(2)} GiB`;
  if (v >= 2 ** 20) return `${(v / 2 ** 20).toFixed(1)} MiB`;
  if (v >= 2 ** 10) return `${(v / 2 ** 10).toFixed(1)} KiB`;
  return `${v} B`;
}

/** Peak resident set of this process so far, in bytes (maxRSS is reported in KiB). */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/** Parses a comma-separated list of positive integers (a CLI flag). */
export function parseIntList(flag: string, value: string): number[] {
  const out = value.split(',').map((s) => Number(s.trim()));
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new Error(`${flag}: expected a comma-separated list of positive integers, got '${value}'`);
  }
  return out;
}

/** Parses a comma-separated list of names from `allowed`. */
export function parseNameList<T extends string>(flag: string, value: string, allowed: readonly T[]): T[] {
  const out = value.split(',').map((s) => s.trim());
  for (const s of out) {
    if (!allowed.includes(s as T)) throw new Error(`${flag}: '${s}' is not one of ${allowed.join(', ')}`);
  }
  return out as T[];
}
