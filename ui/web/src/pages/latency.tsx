// Placeholder while the page is built.
export function LatencyPage(_props: { params: URLSearchParams }) {
  return <main><h1>LatencyPage</h1></main>;
}
