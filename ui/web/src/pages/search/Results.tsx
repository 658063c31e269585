// The results as a table: one row per trace, its first cell a link to the trace. Up/Down
// (and Home/End) move between the rows' links.
import { Link } from "../../router";
import { formatDuration, formatTime, serviceColor } from "../../util";
import { startNs, type TraceSummary } from "./query";

interface Props {
  traces: TraceSummary[];
  hovered?: string;
  onHover: (id: string | undefined) => void;
}

function onKeyDown(e: KeyboardEvent) {
  const target = e.target as HTMLElement;
  if (!target.matches("a.trace-link")) return;
  const links = Array.from((e.currentTarget as HTMLElement).querySelectorAll<HTMLAnchorElement>("a.trace-link"));
  const i = links.indexOf(target as HTMLAnchorElement);
  const to: Record<string, number> = { ArrowDown: i + 1, ArrowUp: i - 1, Home: 0, End: links.length - 1 };
  if (!(e.key in to)) return;
  e.preventDefault();
  links[Math.max(0, Math.min(links.length - 1, to[e.key]))]?.focus();
}

export function Results({ traces, hovered, onHover }: Props) {
  const longest = Math.max(...traces.map((t) => t.duration_ns), 1);
  return (
    <table class="grid search-results" aria-describedby="search-summary">
      <thead>
        <tr>
          <th scope="col">Trace</th>
          <th scope="col">Services</th>
          <th scope="col" class="num">
            Spans
          </th>
          <th scope="col" class="num">
            Errors
          </th>
          <th scope="col" class="num">
            Duration
          </th>
          <th scope="col">Start</th>
        </tr>
      </thead>
      <tbody onKeyDown={onKeyDown} onMouseLeave={() => onHover(undefined)}>
        {traces.map((t) => (
          <tr
            key={t.trace_id}
            data-trace-id={t.trace_id}
            class={hovered === t.trace_id ? "hovered" : undefined}
            onMouseEnter={() => onHover(t.trace_id)}
          >
            <td class="trace-cell">
              <Link
                href={`/trace/${t.trace_id}`}
                class="trace-link"
                onFocus={() => onHover(t.trace_id)}
              >
                <span class="root">
                  {t.root_service != null ? (
                    <>
                      <span class="root-service">{t.root_service}</span>: <span class="root-operation">{t.root_operation}</span>
                    </>
                  ) : (
                    <span class="root-operation missing">(root span not received)</span>
                  )}
                </span>
              </Link>
              <div class="trace-id mono muted">{t.trace_id}</div>
            </td>
            <td class="services">
              <ul aria-label="Services">
                {t.services.map((s) => (
                  <li>
                    <span class="swatch" style={{ background: serviceColor(s.service) }} aria-hidden="true" />
                    {s.service} <span class="muted">×{s.span_count}</span>
                  </li>
                ))}
              </ul>
            </td>
            <td class="num spans">{t.span_count}</td>
            <td class="num errors">
              {t.error_count > 0 ? <span class="badge error">{t.error_count}</span> : <span class="muted">0</span>}
            </td>
            <td class="num duration">
              <span class="duration-text">{formatDuration(t.duration_ns)}</span>
              <span class="duration-bar" aria-hidden="true">
                <span style={{ width: `${Math.max(1, (t.duration_ns / longest) * 100)}%` }} />
              </span>
            </td>
            <td class="start">
              <time dateTime={t.start_time}>{formatTime(startNs(t))}</time>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
