/** Words for people: a count with its noun in the right number ("1 stage", "2 stages"). */
export function count(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString('en')} ${n === 1 ? one : many}`;
}
