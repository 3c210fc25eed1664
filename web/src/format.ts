/** Numbers and times as the page shows them, in the reader's locale and time zone. */

const count = new Intl.NumberFormat();
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "always" });

export function formatCount(value: number): string {
  return count.format(value);
}

/** "812 bytes", "4.2 MiB": a file's size as people read it. */
export function formatBytes(value: number): string {
  if (value < 1024) return `${count.format(value)} bytes`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let size = value / 1024;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size.toFixed(1)} ${units[unit]}`;
}

export function formatDateTime(iso: string): string {
  return dateTime.format(new Date(iso));
}

/** "in 24 hours", "in 3 days", "5 minutes ago". */
export function fromNow(iso: string, now: number = Date.now()): string {
  const seconds = (new Date(iso).getTime() - now) / 1000;
  // Hours up to two days: a link's 24-hour lifetime reads better as hours than as "1 day".
  const steps: [Intl.RelativeTimeFormatUnit, number, number][] = [["day", 86400, 2 * 86400], ["hour", 3600, 3600], ["minute", 60, 60]];
  for (const [unit, size, from] of steps) {
    if (Math.abs(seconds) >= from) return relative.format(Math.round(seconds / size), unit);
  }
  return relative.format(Math.round(seconds), "second");
}
