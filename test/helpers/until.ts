// Polls until a condition yields a value: the integration tests' wait for something the broker does
// asynchronously (a record written, a frame pushed). The deadline is generous: a shared, slow machine.
export async function until<T>(what: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = what();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('condition not met before the deadline');
    await new Promise((r) => setTimeout(r, 20));
  }
}
