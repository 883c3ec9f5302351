// Package tuning holds switches that this module's tests, benchmarks and
// examples set and its users cannot: it is internal.
package tuning

// PortableDoorbell makes a new primary use the portable FIFO doorbell (the
// one of macOS and the BSDs) on Linux as well.
var PortableDoorbell bool
