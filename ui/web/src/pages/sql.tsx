// Placeholder while the page is built.
export function SqlPage(_props: { params: URLSearchParams }) {
  return <main><h1>SqlPage</h1></main>;
}
