//go:build unix

package instance

import (
	"os"
	"syscall"
	"time"
)

// dumpStacks makes a hung child print its goroutines, as the Go runtime
// does on SIGQUIT, and gives it a moment to.
func dumpStacks(p *os.Process) {
	if p.Signal(syscall.SIGQUIT) == nil {
		time.Sleep(time.Second)
	}
}
