package instance

import (
	"runtime"
	"time"

	"github.com/go-instance/instance/internal/futex"
	"github.com/go-instance/instance/shm"
)

// heldBell returns the futex doorbell on which a sender waits for its
// reply. Its waits up to futex.MaxHeld (all of them until the sender
// first checks on the primary, 1 ms in) keep the goroutine's processor,
// and so cost neither a thread woken to take the processor over nor, when
// the reply comes, the work of getting one back: 16 sender processes that
// loop on Acquire sent a quarter more messages a second. Longer waits
// yield it as any other doorbell's.
func heldBell(word *uint32) shm.Doorbell { return futexReplyBell{word} }

type futexReplyBell struct{ word *uint32 }

func (b futexReplyBell) Wait(old uint32, timeout time.Duration) error {
	if timeout >= 0 && timeout <= futex.MaxHeld {
		return futex.WaitHeld(b.word, old, timeout)
	}
	runtime.Gosched() // see yielding
	return futex.Wait(b.word, old, futex.AnySet, timeout)
}

func (b futexReplyBell) Ring() error { return futex.Wake(b.word, futex.AnySet) }

func (futexReplyBell) Close() error { return nil }
