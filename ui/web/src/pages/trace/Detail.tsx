// The span detail panel: identity, timing, status, attributes, resource, scope, events
// (times relative to the trace start) and links to other traces.
import { Link } from "../../router";
import { formatDuration, serviceColor } from "../../util";
import {
  formatValue,
  kindName,
  relativeTime,
  statusName,
  type KeyValue,
  type TraceModel,
} from "./model";

function Attributes({ list, label }: { list: KeyValue[]; label: string }) {
  if (!list.length) return <p class="muted">None.</p>;
  return (
    <table class="kv" aria-label={label}>
      <tbody>
        {list.map((a) => (
          <tr>
            <th scope="row">{a.key}</th>
            <td>{formatValue(a.value)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function SpanDetail({
  model,
  span,
  critical,
  onClose,
  onSelectSpan,
}: {
  model: TraceModel;
  span: number;
  critical: boolean;
  onClose: () => void;
  onSelectSpan: (i: number) => void;
}) {
  const s = model.spans[span];
  const service = model.services[model.service[span]];
  const origin = model.origins[model.origin[span]];
  const status = statusName(s.status?.code);
  const isError = model.error[span] === 1;
  const parent = model.parent[span];
  const events = s.events ?? [];
  const links = s.links ?? [];
  return (
    <aside class="span-detail" aria-labelledby="span-detail-title">
      <div class="span-detail-head">
        <h2 id="span-detail-title">
          <span class="swatch" style={{ background: serviceColor(service) }} aria-hidden="true" />
          {s.name || "(unnamed span)"}
        </h2>
        <button type="button" onClick={onClose} aria-label="Close span details">
          ×
        </button>
      </div>
      <dl class="span-facts">
        <dt>Service</dt>
        <dd>{service}</dd>
        <dt>Duration</dt>
        <dd>{formatDuration(model.end[span] - model.start[span])}</dd>
        <dt>Start</dt>
        <dd>+{formatDuration(model.start[span])}</dd>
        <dt>Kind</dt>
        <dd>{kindName(s.kind)}</dd>
        <dt>Status</dt>
        <dd class={isError ? "status-error" : undefined} data-testid="span-status">
          {isError ? <span class="badge error">Error</span> : status}
          {s.status?.message ? <span class="status-message"> {s.status.message}</span> : null}
        </dd>
        <dt>Critical path</dt>
        <dd>{critical ? "yes" : "no"}</dd>
        <dt>Span ID</dt>
        <dd class="mono">{s.spanId}</dd>
        <dt>Parent</dt>
        <dd class="mono">
          {parent >= 0 ? (
            <button type="button" class="linkish" onClick={() => onSelectSpan(parent)}>
              {s.parentSpanId} ({model.spans[parent].name})
            </button>
          ) : s.parentSpanId ? (
            <>
              {s.parentSpanId} <span class="muted">(not in this trace)</span>
            </>
          ) : (
            <span class="muted">none (root)</span>
          )}
        </dd>
        <dt>Trace ID</dt>
        <dd class="mono">{s.traceId}</dd>
        {s.traceState ? (
          <>
            <dt>Trace state</dt>
            <dd class="mono">{s.traceState}</dd>
          </>
        ) : null}
      </dl>

      <section aria-labelledby="sd-attrs">
        <h3 id="sd-attrs">Attributes</h3>
        <Attributes list={s.attributes ?? []} label="Span attributes" />
      </section>

      <section aria-labelledby="sd-events">
        <h3 id="sd-events">Events ({events.length})</h3>
        {events.length ? (
          <ol class="events">
            {events.map((e) => (
              <li class="event">
                <span class="event-time mono">+{formatDuration(relativeTime(model, e.timeUnixNano))}</span>{" "}
                <span class="event-name">{e.name}</span>
                {e.attributes?.length ? <Attributes list={e.attributes} label={`Attributes of event ${e.name}`} /> : null}
              </li>
            ))}
          </ol>
        ) : (
          <p class="muted">None.</p>
        )}
      </section>

      <section aria-labelledby="sd-links">
        <h3 id="sd-links">Links ({links.length})</h3>
        {links.length ? (
          <ul class="links">
            {links.map((l) => (
              <li>
                <Link href={`/trace/${encodeURIComponent(l.traceId ?? "")}${l.spanId ? `?span=${l.spanId}` : ""}`} class="mono">
                  trace {l.traceId}
                </Link>
                {l.spanId ? <span class="muted mono"> span {l.spanId}</span> : null}
                {l.attributes?.length ? <Attributes list={l.attributes} label="Link attributes" /> : null}
              </li>
            ))}
          </ul>
        ) : (
          <p class="muted">None.</p>
        )}
      </section>

      <section aria-labelledby="sd-resource">
        <h3 id="sd-resource">Resource</h3>
        <Attributes list={origin.resource} label="Resource attributes" />
      </section>

      <section aria-labelledby="sd-scope">
        <h3 id="sd-scope">Scope</h3>
        <p class="mono">
          {origin.scope.name || "(unnamed)"}
          {origin.scope.version ? ` ${origin.scope.version}` : ""}
        </p>
        {origin.scope.attributes?.length ? <Attributes list={origin.scope.attributes} label="Scope attributes" /> : null}
      </section>
    </aside>
  );
}
