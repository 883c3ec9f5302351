//go:build !linux && !windows

package main

import (
	"os"
	"time"
)

// childCPU: without /proc, the idle primary reports its own time.
func childCPU(*os.Process) (time.Duration, bool) { return 0, false }
