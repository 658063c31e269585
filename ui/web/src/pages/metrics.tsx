// Placeholder while the page is built.
export function MetricsPage(_props: { params: URLSearchParams }) {
  return <main><h1>MetricsPage</h1></main>;
}
