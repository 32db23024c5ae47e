// Row bands of the latent at every UNet resolution. Bands are cut at the coarsest level and scaled up,
// so each band stays aligned through every 2x down- and upsampling, whatever the height (uneven bands
// are fine; the last band absorbs the rounding).

export interface Band {
  start: number;
  end: number;
}

export interface PatchGeometry {
  /** Number of bands (ranks in one batch group). */
  parts: number;
  /** Rows and columns per level; level 0 is the latent, level l is ceil(size / 2^l). */
  rows: number[];
  cols: number[];
  /** bands[level][part] */
  bands: Band[][];
}

export function levelSize(size: number, level: number): number {
  let s = size;
  for (let l = 0; l < level; l++) s = Math.ceil(s / 2);
  return s;
}

/**
 * Splits `rows` latent rows into `parts` bands across `levels` resolutions (levels − 1 downsamplings).
 * `what` names the configuration in errors.
 */
export function patchGeometry(
  rows: number,
  cols: number,
  parts: number,
  levels: number,
  what = 'latent',
): PatchGeometry {
  const rowsPerLevel = Array.from({ length: levels }, (_, l) => levelSize(rows, l));
  const colsPerLevel = Array.from({ length: levels }, (_, l) => levelSize(cols, l));
  const coarse = rowsPerLevel[levels - 1]!;
  if (coarse < parts) {
    throw new Error(
      `${what}: ${rows} latent rows give ${coarse} rows at the coarsest UNet level, too few for ${parts} bands (at most ${coarse} ranks per batch group, or a taller image)`,
    );
  }
  const coarseBands: Band[] = Array.from({ length: parts }, (_, i) => ({
    start: Math.floor((i * coarse) / parts),
    end: Math.floor(((i + 1) * coarse) / parts),
  }));
  const bands = rowsPerLevel.map((h, l) => {
    const f = 2 ** (levels - 1 - l);
    return coarseBands.map((b) => ({ start: Math.min(b.start * f, h), end: Math.min(b.end * f, h) }));
  });
  return { parts, rows: rowsPerLevel, cols: colsPerLevel, bands };
}

export function bandRows(b: Band): number {
  return b.end - b.start;
}

/** The level whose width is `cols` (levels have distinct widths for any latent wider than 2^(levels−2)). */
export function levelOfWidth(g: PatchGeometry, cols: number, path: string): number {
  const matches = g.cols.flatMap((c, l) => (c === cols ? [l] : []));
  if (matches.length !== 1) {
    throw new Error(
      `patch geometry: cannot tell the UNet level of '${path}' from its width ${cols} (level widths ${g.cols.join(', ')})`,
    );
  }
  return matches[0]!;
}
