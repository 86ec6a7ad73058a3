// aedes-persistence-level ships no types: its default export takes a Level database and returns an Aedes persistence.
declare module 'aedes-persistence-level' {
  const levelPersistence: (db: unknown) => unknown;
  export default levelPersistence;
}
