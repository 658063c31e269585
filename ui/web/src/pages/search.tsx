// Placeholder while the page is built.
export function SearchPage(_props: { params: URLSearchParams }) {
  return <main><h1>SearchPage</h1></main>;
}
