// Display helpers. Amounts stay bigint end to end: never a JS number for token values.

export function formatUnits(amount: string | bigint, decimals: number, symbol = ""): string {
  const value = typeof amount === "bigint" ? amount : parseBig(amount);
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const scale = 10n ** BigInt(decimals);
  const whole = abs / scale;
  let fraction = (abs % scale).toString().padStart(decimals, "0").replace(/0+$/, "");
  if (fraction.length > 6) fraction = fraction.slice(0, 6);
  const text = `${negative ? "-" : ""}${whole}${fraction ? "." + fraction : ""}`;
  return symbol ? `${text} ${symbol}` : text;
}

/// Parses a decimal amount typed by a user into base units; a clear error names what is wrong.
export function parseUnits(text: string, decimals: number, field: string): bigint {
  const trimmed = text.trim();
  const match = /^(\d+)(?:\.(\d*))?$/.exec(trimmed);
  if (!match) throw new Error(`${field}: \`${text}\` is not a non-negative decimal number`);
  const fraction = match[2] ?? "";
  if (fraction.length > decimals) throw new Error(`${field}: at most ${decimals} decimal places`);
  return BigInt(match[1] ?? "0") * 10n ** BigInt(decimals) + BigInt(fraction.padEnd(decimals, "0") || "0");
}

export function parseBig(text: string): bigint {
  try {
    return BigInt(text);
  } catch {
    return 0n;
  }
}

export function shortAddress(address: string): string {
  return address.length > 12 ? `${address.slice(0, 6)}…${address.slice(-4)}` : address;
}

export function formatBytes(text: string): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = Number(parseBig(text));
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value >= 10 || unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function formatCpu(millis: string): string {
  return `${(Number(parseBig(millis)) / 1000).toFixed(1)} CPU`;
}

export function formatTime(unix: number | null): string {
  if (unix === null) return "—";
  return new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function formatIn(unix: number | null, now = Date.now() / 1000): string {
  if (unix === null) return "never";
  const seconds = Math.round(unix - now);
  const abs = Math.abs(seconds);
  const text = abs < 120 ? `${abs} s` : abs < 7200 ? `${Math.round(abs / 60)} min` : abs < 172800 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  return seconds >= 0 ? `in ${text}` : `${text} ago`;
}

/// Share of `used` in `total` as 0..1 (0 when the total is 0).
export function share(used: string, total: string): number {
  const t = parseBig(total);
  if (t === 0n) return 0;
  return Number((parseBig(used) * 10000n) / t) / 10000;
}
