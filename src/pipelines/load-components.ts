// Loading a pipeline's components side by side, without leaking the ones that loaded when another fails.

interface Releasable {
  dispose(): Promise<void>;
}

function releasable(v: unknown): v is Releasable {
  return typeof v === 'object' && v !== null && typeof (v as Releasable).dispose === 'function';
}

/**
 * Awaits every load. When any fails, the components that did load are disposed (their ORT sessions would
 * otherwise hold memory until the process exits), and the failure is thrown: as it is when one load failed,
 * or as an AggregateError whose message lists every failure.
 */
export async function loadComponents<const P extends readonly Promise<unknown>[]>(
  loads: P,
): Promise<{ -readonly [K in keyof P]: Awaited<P[K]> }> {
  const settled = await Promise.allSettled(loads);
  const errors = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
  if (errors.length === 0) {
    return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as {
      -readonly [K in keyof P]: Awaited<P[K]>;
    };
  }
  const loaded = settled.flatMap((s) => (s.status === 'fulfilled' && releasable(s.value) ? [s.value] : []));
  // A failing dispose must not hide why loading failed.
  await Promise.allSettled(loaded.map((c) => c.dispose()));
  if (errors.length === 1) throw errors[0];
  const message = errors.map((e) => (e instanceof Error ? e.message : String(e))).join('\n');
  throw new AggregateError(errors, message);
}
