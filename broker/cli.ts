// `writ`: the command line. Placeholder until the broker lands.
console.error('writ: not built yet');
process.exit(2);
