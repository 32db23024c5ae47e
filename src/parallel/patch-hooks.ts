// DistriFusion's exchange points as graph hooks (distrifuser's DistriConv2dPP, DistriSelfAttentionPP and
// DistriGroupNorm), for one rank and one phase:
// - sync steps cut the graph at every point and wait for the peers' fresh data;
// - async steps feed the peers' data from the previous step as plain inputs (no cut, no wait) and emit
//   this rank's fresh data as outputs, to be published while later segments run.
import type { SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import type {
  AttentionKV,
  Conv2dInput,
  Conv2dSite,
  ExchangeHooks,
  GroupNormSite,
  SelfAttentionSite,
} from '../graph/hooks.js';
import type { SyncMode } from './config.js';
import { bandRows, levelOfWidth, type PatchGeometry } from './geometry.js';

export type ExchangeKind = 'halo' | 'kv' | 'gn';
export type Phase = 'sync' | 'async';

/** One exchange point, the same on every rank: what each group member publishes there. */
export interface ExchangePoint {
  id: number;
  key: string;
  kind: ExchangeKind;
  path: string;
  batch: number;
  /** halo: channels; kv: 2·channels (all of K, then all of V); gn: groups. */
  channels: number;
  /** halo: columns; kv: 1; gn: 2 (E[x], E[x²]). */
  cols: number;
  /** halo: 2·pad rows per member; kv: tokens per member; gn: 1 per member. */
  rowsPerMember: number[];
  /** halo: pad rows p; kv and gn: 0. */
  pad: number;
  /** Weight of each member in GroupNorm statistics (its share of the elements). */
  weights: number[];
}

export function pointElems(p: ExchangePoint, member: number): number {
  return p.batch * p.channels * p.rowsPerMember[member]! * p.cols;
}

/** Exchange points keyed by kind@path, in the order the model reaches them. */
export class ExchangeRegistry {
  readonly points: ExchangePoint[] = [];
  private readonly byKey = new Map<string, ExchangePoint>();

  get(key: string): ExchangePoint | undefined {
    return this.byKey.get(key);
  }

  add(p: Omit<ExchangePoint, 'id'>): ExchangePoint {
    const existing = this.byKey.get(p.key);
    if (existing) return existing;
    const point = { ...p, id: this.points.length };
    this.points.push(point);
    this.byKey.set(p.key, point);
    return point;
  }
}

export interface PatchHooksOptions {
  geometry: PatchGeometry;
  member: number;
  mode: SyncMode;
  phase: Phase;
  registry: ExchangeRegistry;
  /**
   * Async phase (DistriConfig.lowMemory): start a segment at a self-attention once the segment so far
   * holds this many bytes of whole-image K/V (the peers' stale part and this rank's fresh one); 0 starts
   * one at every self-attention. Undefined: no cuts.
   */
  kvBytesPerSegment?: number;
}

/** Graph input / output names of the async phase. */
export const staleName = (p: ExchangePoint, what: string): string => `stale:${p.id}:${what}`;
export const freshName = (p: ExchangePoint, part?: KVPart): string =>
  part ? `fresh:${p.id}:${part}` : `fresh:${p.id}`;

/**
 * K/V points publish K and V as two parts of one slot: per member [K: B·tokens·C][V: B·tokens·C], so
 * each part is one contiguous copy.
 */
export type KVPart = 'k' | 'v';
export const KV_PARTS: readonly KVPart[] = ['k', 'v'];

function gnIsExchanged(mode: SyncMode, phase: Phase): boolean {
  return phase === 'sync' || !(mode === 'separate_gn' || mode === 'no_sync');
}

function publishesInAsync(mode: SyncMode): boolean {
  return mode !== 'no_sync';
}

export function createPatchHooks(o: PatchHooksOptions): ExchangeHooks {
  const { geometry: g, member: j, mode, phase, registry } = o;
  const n = g.parts;
  const members = Array.from({ length: n }, (_, k) => k);
  // Whole-image K/V bytes of the self-attentions in the current async segment.
  let segmentKVBytes = 0;

  const register = (
    site: { path: string },
    kind: ExchangeKind,
    p: Omit<ExchangePoint, 'id' | 'key' | 'kind' | 'path'>,
  ) => {
    const point = registry.add({ key: `${kind}@${site.path}`, kind, path: site.path, ...p });
    if (
      point.batch !== p.batch ||
      point.channels !== p.channels ||
      point.rowsPerMember.join() !== p.rowsPerMember.join()
    ) {
      throw new Error(`exchange ${kind} at '${site.path}': layout differs between graphs`);
    }
    return point;
  };

  const publish = (x: SymTensor, p: ExchangePoint, part?: KVPart): void => {
    if (publishesInAsync(mode)) x.graph.output(freshName(p, part), x);
  };

  function conv2dInput(site: Conv2dSite): Conv2dInput | undefined {
    const x = site.x;
    const [batch, channels, rows, cols] = x.shape as [number, number, number, number];
    const [p, pw] = site.padding;
    const level = levelOfWidth(g, cols, site.path);
    const band = g.bands[level]![j]!;
    if (rows === g.rows[level] && bandRows(band) < rows) {
      // The first conv sees the whole latent: it takes its rows plus the halo directly, nothing to exchange.
      const start = Math.max(0, band.start - p);
      const end = Math.min(rows, band.end + p);
      return {
        x: F.slice(x, 2, start, end),
        pads: [band.start - p < 0 ? p : 0, pw, band.end + p > rows ? p : 0, pw],
      };
    }
    if (rows !== bandRows(band)) {
      throw new Error(
        `conv '${site.path}': expected a band of ${bandRows(band)} rows at level ${level}, got ${rows}`,
      );
    }
    if (p === 0) return undefined;
    if (rows < p)
      throw new Error(`conv '${site.path}': a band of ${rows} rows is thinner than the ${p}-row halo`);
    const point = register(site, 'halo', {
      batch,
      channels,
      cols,
      rowsPerMember: members.map(() => 2 * p),
      pad: p,
      weights: [],
    });
    const edges = F.concat([F.slice(x, 2, 0, p), F.slice(x, 2, rows - p, rows)], 2);
    const haloShape = [batch, channels, p, cols];
    let above: SymTensor | undefined;
    let below: SymTensor | undefined;
    if (phase === 'sync') {
      const wanted = [...(j > 0 ? ['above'] : []), ...(j < n - 1 ? ['below'] : [])];
      const got = x.graph.exchange(
        'halo',
        [edges],
        wanted.map(() => ({ dtype: 'float32' as const, shape: haloShape })),
        { point: point.id },
      );
      if (j > 0) above = got.shift();
      if (j < n - 1) below = got.shift();
    } else {
      if (j > 0) above = x.graph.input(staleName(point, 'above'), 'float32', haloShape);
      if (j < n - 1) below = x.graph.input(staleName(point, 'below'), 'float32', haloShape);
      publish(edges, point);
    }
    const parts = [...(above ? [above] : []), x, ...(below ? [below] : [])];
    return { x: F.concat(parts, 2), pads: [above ? 0 : p, pw, below ? 0 : p, pw] };
  }

  function selfAttentionKV(site: SelfAttentionSite): AttentionKV | undefined {
    const [batch, tokens, width] = site.k.shape as [number, number, number];
    const levels = g.rows.map((_, l) => l).filter((l) => bandRows(g.bands[l]![j]!) * g.cols[l]! === tokens);
    if (levels.length !== 1) {
      throw new Error(`self-attention '${site.path}': cannot tell its UNet level from ${tokens} tokens`);
    }
    const level = levels[0]!;
    const perMember = members.map((k) => bandRows(g.bands[level]![k]!) * g.cols[level]!);
    const point = register(site, 'kv', {
      batch,
      channels: 2 * width,
      cols: 1,
      rowsPerMember: perMember,
      pad: 0,
      weights: [],
    });
    const total = perMember.reduce((a, b) => a + b, 0);
    const graph = site.k.graph;
    if (phase === 'sync') {
      const whole = { dtype: 'float32' as const, shape: [batch, total, width] };
      const [k, v] = graph.exchange('kv', [site.k, site.v], [whole, whole], { point: point.id });
      return { k: k!, v: v! };
    }
    // A segment boundary here: the stale K/V (the largest inputs) then live only while their segment
    // runs, and the fresh K/V is published when its segment ends, not held to the end of the step. Each
    // cut costs time of its own (measured in the README), so segments group self-attentions up to a size.
    const kvBytes = batch * total * width * 2 * 4;
    const budget = o.kvBytesPerSegment;
    if (budget !== undefined) {
      if (segmentKVBytes + kvBytes > budget) {
        graph.split();
        segmentKVBytes = 0;
      }
      segmentKVBytes += kvBytes;
    }
    const before = perMember.slice(0, j).reduce((a, b) => a + b, 0);
    const after = total - before - tokens;
    // K and V stay apart, so that no Concat fuses them and no Split parts them again.
    const whole = (own: SymTensor, part: KVPart): SymTensor => {
      const stale = (where: 'before' | 'after', rows: number) =>
        rows > 0 ? [graph.input(staleName(point, `${where}_${part}`), 'float32', [batch, rows, width])] : [];
      publish(own, point, part);
      return F.concat([...stale('before', before), own, ...stale('after', after)], 1);
    };
    return { k: whole(site.k, 'k'), v: whole(site.v, 'v') };
  }

  function groupNormStats(site: GroupNormSite): SymTensor | undefined {
    const x = site.x;
    const [batch, , rows, cols] = x.shape as [number, number, number, number];
    const level = levelOfWidth(g, cols, site.path);
    if (rows !== bandRows(g.bands[level]![j]!)) {
      throw new Error(
        `GroupNorm '${site.path}': expected a band of ${bandRows(g.bands[level]![j]!)} rows, got ${rows}`,
      );
    }
    const counts = members.map((k) => bandRows(g.bands[level]![k]!));
    const total = counts.reduce((a, b) => a + b, 0);
    const point = register(site, 'gn', {
      batch,
      channels: site.groups,
      cols: 2,
      rowsPerMember: members.map(() => 1),
      pad: 0,
      weights: counts.map((c) => c / total),
    });
    if (!gnIsExchanged(mode, phase)) return undefined;
    const local = F.groupMoments(x, site.groups);
    const shape = [batch, site.groups, 2];
    let full: SymTensor;
    if (phase === 'sync' || mode === 'sync_gn') {
      full = x.graph.exchange('gn', [local], [{ dtype: 'float32', shape }], { point: point.id })[0]!;
    } else if (mode === 'corrected_async_gn') {
      // full = mean_k(stale_k) + (fresh_j − stale_j), in distrifuser's order of operations
      const staleFull = x.graph.input(staleName(point, 'full'), 'float32', shape);
      const staleOwn = x.graph.input(staleName(point, 'own'), 'float32', shape);
      full = F.add(staleFull, F.sub(local, staleOwn));
      publish(local, point);
    } else {
      // stale_gn: the peers' stale statistics with this rank's fresh ones in its own slot
      const others = x.graph.input(staleName(point, 'others'), 'float32', shape);
      full = F.add(others, F.mul(local, point.weights[j]!));
      publish(local, point);
    }
    return momentsToStatsWithFallback(full, mode === 'corrected_async_gn' ? local : undefined);
  }

  return { conv2dInput, selfAttentionKV, groupNormStats };
}

/** (E[x], E[x²]) → (mean, var); corrected_async_gn falls back to the local variance where var < 0. */
function momentsToStatsWithFallback(full: SymTensor, local: SymTensor | undefined): SymTensor {
  const stats = F.momentsToStats(full);
  if (!local) return stats;
  const mean = F.slice(stats, 2, 0, 1);
  const v = F.slice(stats, 2, 1, 2);
  const localVar = F.slice(F.momentsToStats(local), 2, 1, 2);
  return F.concat([mean, F.where(F.less(v, 0), localVar, v)], 2);
}
