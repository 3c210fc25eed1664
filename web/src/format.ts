/** Numbers and times as the page shows them, in the reader's locale and time zone. */

const count = new Intl.NumberFormat();
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "always" });

export function formatCount(value: number): string {
  return count.format(value);
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
