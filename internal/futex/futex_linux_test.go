package futex

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// done fails if ch is not closed within a generous bound: a liveness
// check, not a timing one. It panics, ending the test binary: a waiter
// stuck for good keeps its processor, and later tests would hang on it.
func done(ch <-chan struct{}, what string) {
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		panic(what + " did not return")
	}
}

// A held wait ends by itself, however long the caller asks for.
func TestWaitHeldBounded(t *testing.T) {
	for _, timeout := range []time.Duration{-1, time.Hour} {
		var word uint32
		ch := make(chan struct{})
		go func() {
			WaitHeld(&word, 0, timeout)
			close(ch)
		}()
		done(ch, "WaitHeld("+timeout.String()+")")
	}
}

// A goroutine that keeps waiting, held, on one processor leaves other
// goroutines and the collector to run: its waits end, and the runtime can
// preempt it between them.
func TestWaitHeldLetsOthersRun(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var word, stop uint32
	go func() {
		for atomic.LoadUint32(&stop) == 0 {
			WaitHeld(&word, 0, MaxHeld)
		}
	}()
	ch := make(chan struct{})
	go func() {
		for range 5 {
			runtime.GC()
		}
		close(ch)
	}()
	done(ch, "collecting beside a held waiter")
	atomic.StoreUint32(&stop, 1)
}
