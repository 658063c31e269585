// Placeholder while the page is built.
export function TracePage({ id }: { id: string; params: URLSearchParams }) {
  return <main><h1>Trace {id}</h1></main>;
}
