// Placeholder while the page is built.
export function MapPage(_props: { params: URLSearchParams }) {
  return <main><h1>MapPage</h1></main>;
}
