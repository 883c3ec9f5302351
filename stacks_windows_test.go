package instance

import "os"

// dumpStacks: Windows has no signal that makes a Go program print its
// goroutines.
func dumpStacks(*os.Process) {}
