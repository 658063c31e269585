// Relative ("last 1h") or absolute (from/to) time range; the choice is written to the URL.
import { useEffect, useState } from "preact/hooks";
import type { TimeRange } from "../util";

const RELATIVE = ["5m", "15m", "1h", "6h", "24h", "7d", "30d"];

function toLocalInput(iso?: string): string {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const off = d.getTimezoneOffset() * 60000;
  return new Date(d.getTime() - off).toISOString().slice(0, 19);
}

export function TimeRangePicker({ value, onChange }: { value: TimeRange; onChange: (t: TimeRange) => void }) {
  const [mode, setMode] = useState<"relative" | "absolute">(value.range ? "relative" : "absolute");
  const [from, setFrom] = useState(toLocalInput(value.start));
  const [to, setTo] = useState(toLocalInput(value.end));
  // Back/forward navigation changes `value` without remounting: follow it.
  useEffect(() => {
    setMode(value.range ? "relative" : "absolute");
    setFrom(toLocalInput(value.start));
    setTo(toLocalInput(value.end));
  }, [value.range, value.start, value.end]);
  return (
    <fieldset class="time-range">
      <legend>Time range</legend>
      <label>
        <span class="sr-only">Range kind</span>
        <select
          aria-label="Range kind"
          value={mode}
          onChange={(e) => setMode((e.target as HTMLSelectElement).value as "relative" | "absolute")}
        >
          <option value="relative">Last</option>
          <option value="absolute">Between</option>
        </select>
      </label>
      {mode === "relative" ? (
        <select
          aria-label="Relative range"
          value={value.range ?? "1h"}
          onChange={(e) => onChange({ range: (e.target as HTMLSelectElement).value })}
        >
          {RELATIVE.map((r) => (
            <option value={r}>{r}</option>
          ))}
        </select>
      ) : (
        <>
          <input
            type="datetime-local"
            step="1"
            aria-label="From"
            value={from}
            onChange={(e) => setFrom((e.target as HTMLInputElement).value)}
          />
          <input
            type="datetime-local"
            step="1"
            aria-label="To"
            value={to}
            onChange={(e) => setTo((e.target as HTMLInputElement).value)}
          />
          <button
            type="button"
            onClick={() =>
              onChange({
                start: from ? new Date(from).toISOString() : undefined,
                end: to ? new Date(to).toISOString() : undefined,
              })
            }
          >
            Apply
          </button>
        </>
      )}
    </fieldset>
  );
}
