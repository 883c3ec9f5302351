package instance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-instance/instance/handoff"
	"github.com/go-instance/instance/shm"
)

// Doorbell kinds, recorded in the region header so that every secondary
// uses the one its primary waits on.
const (
	bellFutex uint32 = 1 // Linux futex on the word
	bellFIFO  uint32 = 2 // FIFO files beside the lock (Unix)
	bellEvent uint32 = 3 // named auto-reset events (Windows)
)

// Message is what a secondary launch forwarded.
type Message struct {
	Args []string          // arguments, byte for byte as the secondary got them
	Dir  string            // the secondary's working directory
	Env  map[string]string // forwarded environment variables that were set
	PID  int               // the secondary's process id
	Time time.Time         // when the secondary sent it
	Data []byte            // the payload given to WithData
}

// Reply is the primary's answer to a message: the secondary's exit code and
// bytes for it to print.
type Reply struct {
	Code int
	Data []byte
}

// Handler handles one forwarded message and returns the reply for its
// sender.
type Handler func(*Message) Reply

// Instance is the result of Acquire: either the primary, which holds the
// instance's lock and receives messages, or a secondary, whose message was
// delivered and answered.
type Instance struct {
	primary bool
	reply   Reply

	// A secondary's region, doorbell and lock file, until Release.
	spent        *spent
	spentCleanup runtime.Cleanup

	// The primary's state.
	cfg      *config
	files    *files
	lock     ownerLock // held for the instance's whole life
	region   mapping
	bell     shm.Doorbell // the primary's doorbell, which it waits on
	recvDone chan struct{}
	notify   chan struct{} // a message was queued
	closed   chan struct{} // Release was called
	guard    guard         // keeps the files where launches look (removed_*.go)
	forwards sync.WaitGroup
	// An idle Serve waits where a sender wakes it directly (see
	// handoff.Sender.Serving), and answers what it receives itself: the
	// receiver, a second goroutine to wake, then sleeps through it.
	// sharedBell: the doorbell is a futex, which wakes every waiter of the
	// set rung, so every idle Serve waits on it, in a set of its own,
	// but one at a time on serveBell, a watch of the lock file (watched).
	// serveOwn: they have a doorbell of their own, serveBell (an
	// auto-reset event, or a FIFO, <name>.serve), which wakes one waiter,
	// so one idle Serve at a time waits on it and the others wait for the
	// receiver's queue.
	sharedBell bool
	serveOwn   bool
	waiters    sync.WaitGroup // Serve calls counted in idle: teardown waits for them before unmapping

	mu        sync.Mutex // guards everything below and the mapping
	view      *handoff.Region
	serveBell shm.Doorbell // the current publication's (see retire)
	rc        *handoff.Receiver
	slotBells []shm.Doorbell
	queue     []*pending
	closing   bool           // Release was called: no new message goes to a handler
	inflight  int            // handlers running
	torn      bool           // the region is unmapped and the lock released
	idle      int            // Serve calls waiting on the doorbell (published in the region)
	faults    int            // header faults repaired
	retired   []*publication // regions published before the files were removed
	watched   bool           // a Serve waits on a futex primary's serveBell, its watch (one at a time: see openerBell)
}

type pending struct {
	in  handoff.Incoming
	rc  *handoff.Receiver // the receiver it came through
	msg *Message
}

// Acquire makes this process the primary of the application appID, or, if a
// primary is running, forwards this launch's message to it and waits for
// its reply. It is AcquireContext with a background context.
func Acquire(appID string, opts ...Option) (*Instance, error) {
	return AcquireContext(context.Background(), appID, opts...)
}

// AcquireContext is Acquire bounded by ctx as well as by WithTimeout.
//
// A nil error means the outcome is decided: IsPrimary tells which. A
// secondary's message was delivered once and answered; Reply has the
// answer. Errors wrap the package's sentinels. Most mean that nothing was
// delivered; ErrTimeout (the primary did not answer in time), ErrTooLarge
// for a reply over WithMaxMessage, and ErrIncompatible for a reply that
// did not arrive whole can also come after the primary received the
// message. If the primary dies after receiving it, the message goes again
// to the next primary, which may be this process.
func AcquireContext(ctx context.Context, appID string, opts ...Option) (*Instance, error) {
	cfg, err := newConfig(appID, opts)
	if err != nil {
		return nil, err
	}
	msg, err := cfg.encodeMessage()
	if err != nil {
		return nil, err
	}
	f, err := openFiles(cfg, appID)
	if err != nil {
		return nil, err
	}
	lock, err := f.openLock()
	if err != nil {
		return nil, err
	}
	// A deadline, not a derived context: a context's timer would start the
	// runtime's poller, which costs a secondary several system calls.
	deadline := time.Now().Add(cfg.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	inst, err := acquire(ctx, deadline, cfg, f, lock, msg)
	if err != nil {
		lock.Close()
		return nil, unusable(err)
	}
	return inst, nil
}

// baseName names the files or objects of appID in c's scope, and in
// session, where the scope is per session: the id, cut to 40 bytes, and a
// hash of all of them. The hash is FNV-1a (64 bits) of the four joined by
// NULs, which is enough to keep names apart: crypto/sha256, which it
// replaces, cost every process about 50 µs at start, for its package's
// setup. It is computed here, straight into the name's one allocation
// (with hash/fnv, strings.Join and hex: two, and a fifth more time).
func baseName(appID string, c *config, session string) string {
	base := appID
	if len(base) > 40 {
		base = base[:40]
	}
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i, s := range [...]string{appID, c.key, c.scope.String(), session} {
		if i > 0 {
			h *= prime // the NUL between two: h^0 is h
		}
		for j := range len(s) {
			h = (h ^ uint64(s[j])) * prime
		}
	}
	var x [16]byte
	for i := len(x) - 1; i >= 0; i, h = i-1, h>>4 {
		x[i] = "0123456789abcdef"[h&15]
	}
	return "go-instance-" + base + "-" + string(x[:])
}

// incompatibleGrace is how long a secondary retries a region that claims
// another protocol version or doorbell before it reports ErrIncompatible.
const incompatibleGrace = 250 * time.Millisecond

// mapping is the shared region as this process maps it.
type mapping interface {
	Bytes() []byte
	Close() error // unmaps it
}

// errBecamePrimary: a secondary found the primary gone and took the lock.
// Its slot is left as it is (see handoff.ErrPrimaryGone): it will reset
// the region, and must not wait, holding the lock, for a reply that the
// dead primary was writing.
var errBecamePrimary = fmt.Errorf("instance: became primary: %w", handoff.ErrPrimaryGone)

// ownerLock is the lock that makes a primary; the kernel drops it when its
// holder exits.
type ownerLock interface {
	TryLock() (bool, error)
	Unlock() error
	Close() error // releases the lock too
}

func acquire(ctx context.Context, deadline time.Time, cfg *config, f *files, lock ownerLock, msg []byte) (*Instance, error) {
	backoff := time.Millisecond
	var lastErr error
	var incompatibleSince time.Time
	for {
		ok, err := lock.TryLock()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
		if !ok {
			var reply []byte
			var sp *spent
			reply, sp, err = send(ctx, deadline, cfg, f, lock, msg)
			if err == nil {
				if sp.locked {
					// A primary that answered and then exited: a launch
					// with its answer must not keep the next from the lock.
					if err := lock.Unlock(); err != nil {
						sp.closeRegion()
						return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
					}
				}
				code, data, err := handoff.DecodeReply(reply)
				if err != nil {
					sp.closeRegion()
					return nil, fmt.Errorf("%w: %w", ErrIncompatible, err)
				}
				return newSecondary(Reply{Code: int(code), Data: data}, sp), nil
			}
			ok = errors.Is(err, errBecamePrimary)
		}
		if ok {
			moved, err := f.confirmLock()
			if err != nil {
				return nil, err
			}
			if moved {
				continue // the lock to try is another
			}
			return becomePrimary(cfg, f, lock)
		}
		switch {
		case errors.Is(err, handoff.ErrIncompatible), errors.Is(err, ErrIncompatible):
			// Another version, or damage that looks like one (a header
			// field overwritten), which the primary, rung by sendMapped,
			// repairs at once: believe it only once it persists.
			if incompatibleSince.IsZero() {
				incompatibleSince = time.Now()
			}
			if time.Since(incompatibleSince) >= incompatibleGrace {
				if errors.Is(err, ErrIncompatible) {
					return nil, err
				}
				return nil, fmt.Errorf("%w: %w", ErrIncompatible, err)
			}
			lastErr = err
		case errors.Is(err, handoff.ErrTooLarge):
			return nil, fmt.Errorf("%w: %w", ErrTooLarge, err)
		case errors.Is(err, handoff.ErrTimeout), ctx.Err() != nil:
			return nil, timeoutError(ctx, err)
		case errors.Is(err, handoff.ErrMalformed): // a reply that did not arrive whole
			return nil, fmt.Errorf("%w: %w", ErrIncompatible, err)
		case errors.Is(err, handoff.ErrNotReady), errors.Is(err, handoff.ErrLost):
			// The primary is starting, stopping or was replaced: look again.
			lastErr = err
		default:
			return nil, err
		}
		wait := min(backoff, time.Until(deadline))
		if wait <= 0 {
			return nil, timeoutError(ctx, lastErr)
		}
		select {
		case <-ctx.Done():
			return nil, timeoutError(ctx, lastErr)
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 20*time.Millisecond)
	}
}

// unusable makes an error that wraps none of the sentinels, which can only
// be an OS failure on the instance's files or objects (a doorbell's FIFO
// that is no FIFO or another user's, an event that another user made), an
// ErrLockUnavailable, as one of the lock file would be.
func unusable(err error) error {
	for _, s := range [...]error{ErrInvalidName, ErrLockUnavailable, ErrTimeout, ErrIncompatible, ErrTooLarge, ErrClosed} {
		if errors.Is(err, s) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", ErrLockUnavailable, err)
}

func timeoutError(ctx context.Context, last error) error {
	why := "the primary did not answer"
	if last != nil && !errors.Is(last, handoff.ErrTimeout) {
		why = last.Error()
	}
	cause := ctx.Err()
	if cause == nil {
		cause = context.DeadlineExceeded // the deadline passed a moment before ctx noticed
	}
	return fmt.Errorf("%w: %s: %w", ErrTimeout, why, cause)
}

// send forwards msg once through the region and returns the encoded reply,
// and, once it has, the region still mapped.
func send(ctx context.Context, deadline time.Time, cfg *config, f *files, lock ownerLock, msg []byte) (reply []byte, sp *spent, err error) {
	reg, err := f.openRegion(cfg.layout.Size())
	if err != nil {
		return nil, nil, err
	}
	sp = &spent{reg: reg, lock: lock}
	// A region truncated under us faults on access: a lost message, not a
	// crash.
	if ferr := catchFault(func() { reply, err = sendMapped(ctx, deadline, cfg, f, lock, sp, msg) }); ferr != nil {
		err = fmt.Errorf("%w: %w", handoff.ErrLost, ferr)
	}
	if err != nil {
		sp.closeRegion()
		return nil, nil, err
	}
	return reply, sp, nil
}

// newSecondary returns the instance of a secondary that got reply. It
// keeps the region mapped and the lock file and the doorbell open until
// Release, or until the process exits or the instance is collected: a
// launch that exits with the reply leaves them to the kernel, which drops
// them with the rest of the process for less than munmap and close cost
// (about a fifth of a launch's handoff, most of it the other processors'
// TLB flush).
func newSecondary(r Reply, sp *spent) *Instance {
	inst := &Instance{reply: r, spent: sp}
	inst.spentCleanup = runtime.AddCleanup(inst, func(s *spent) { s.close() }, sp)
	return inst
}

// spent is what a secondary holds after its reply: nothing uses it again.
type spent struct {
	reg   mapping
	bell  shm.Doorbell // the primary's, once rung
	serve shm.Doorbell // its Serve calls', if it has them
	lock  ownerLock
	// locked: a check while the sender waited took the lock (the primary
	// had gone), yet the reply was there after all.
	locked bool
}

// closeRegion unmaps the region and closes the doorbells.
func (s *spent) closeRegion() error {
	var berr, serr error
	if s.bell != nil {
		berr = s.bell.Close()
	}
	if s.serve != nil {
		serr = s.serve.Close()
	}
	return errors.Join(berr, serr, s.reg.Close())
}

func (s *spent) close() error { return errors.Join(s.closeRegion(), s.lock.Close()) }

func sendMapped(ctx context.Context, deadline time.Time, cfg *config, f *files, lock ownerLock, sp *spent, msg []byte) ([]byte, error) {
	b := sp.reg.Bytes()
	// Touch the header's page first with a write (adding 0 to the
	// doorbell): that maps it writable in one fault, where a first read
	// faults twice (to read, mapping its neighbours as well, then to write).
	if word := handoff.BellWordOf(b); word != nil {
		atomic.AddUint32(word, 0)
	}
	view, err := handoff.Attach(b)
	if errors.Is(err, handoff.ErrNotReady) || errors.Is(err, handoff.ErrIncompatible) {
		nudge(f, b)
	}
	if err != nil {
		return nil, err
	}
	// Let the primary bring its window to the front when it handles this.
	allowForeground(view.Owner().PID)
	kind := view.BellKind()
	primaryBell, err := f.doorbell(view.BellWord(), kind, -1, false)
	if err != nil {
		if errors.Is(err, ErrIncompatible) {
			nudge(f, b) // a damaged doorbell kind, perhaps
		}
		return nil, err
	}
	sp.bell = primaryBell
	slotBell := &lazyBell{}
	defer slotBell.Close()
	var ring, serving handoff.Bell = primaryBell, nil
	if b, err := f.serveDoorbell(view.BellWord(), kind, false); err == nil && b != nil {
		sp.serve, serving = b, b
	}
	if testHookChunkSent != nil {
		n := new(int)
		ring = &hookBell{Bell: ring, n: n, hook: testHookChunkSent}
		if serving != nil {
			serving = &hookBell{Bell: serving, n: n, hook: testHookChunkSent}
		}
	}
	s := &handoff.Sender{
		Region:  view,
		Primary: ring,
		Serving: serving,
		Slot: func(i int) (handoff.Bell, error) {
			slotBell.open = func() (shm.Doorbell, error) { return f.replyBell(view.SlotWord(i), kind, i) }
			return slotBell, nil
		},
		Alive: processAlive,
		Check: func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			ok, err := lock.TryLock()
			if err != nil {
				return fmt.Errorf("%w: %w", ErrLockUnavailable, err)
			}
			if ok {
				sp.locked = true
				return errBecamePrimary
			}
			return nil
		},
		PID:      pid(),
		MaxReply: cfg.maxMessage,
	}
	return s.Send(msg, deadline)
}

// lazyBell opens its doorbell when it first waits. A sender's wait on its
// slot usually ends while it spins, before it sleeps: a FIFO's mkfifo,
// open, fstat and close (or an event's), which it then need not make, cost
// more than the rest of its wait. It is safe because a doorbell checks the
// word once open, before it sleeps: a ring that found no waiter came after
// a change that this check sees.
type lazyBell struct {
	open func() (shm.Doorbell, error)
	b    shm.Doorbell
	err  error
}

func (l *lazyBell) Wait(old uint32, timeout time.Duration) error {
	if l.b == nil && l.err == nil {
		l.b, l.err = l.open()
	}
	if l.err != nil {
		return l.err
	}
	return l.b.Wait(old, timeout)
}

func (l *lazyBell) Ring() error {
	if l.b == nil {
		return nil
	}
	return l.b.Ring()
}

func (l *lazyBell) Close() error {
	if l.b == nil {
		return nil
	}
	return l.b.Close()
}

// replyBell opens the doorbell on which a sender waits for its reply.
func (f *files) replyBell(word *uint32, kind uint32, slot int) (shm.Doorbell, error) {
	if kind == bellFutex {
		if b := heldBell(word); b != nil {
			return b, nil
		}
	}
	b, err := f.doorbell(word, kind, slot, true)
	if err != nil {
		return nil, err
	}
	return yielding{b}, nil
}

// yielding is a doorbell that passes through the scheduler before it
// sleeps in a system call. A goroutine that never does (one that sends
// again and again, and sleeps at once because others are waiting) looks
// to the runtime's monitor as if it had run for over 10 ms on whichever
// processor it last took on leaving a call: the monitor then takes that
// processor back at nearly every tick (20 µs), waking a thread each time
// for nothing. Gosched wakes one too (see Sender's spin), but once per
// sleep.
type yielding struct{ shm.Doorbell }

func (y yielding) Wait(old uint32, timeout time.Duration) error {
	runtime.Gosched()
	return y.Doorbell.Wait(old, timeout)
}

// testHookChunkSent, set by tests, runs each time a secondary has rung the
// primary, with the count so far: a test stops a sender mid-message with it.
var testHookChunkSent func(n int)

type hookBell struct {
	handoff.Bell
	n    *int // rings of either bell
	hook func(int)
}

func (b *hookBell) Ring() error {
	err := b.Bell.Ring()
	*b.n++
	b.hook(*b.n)
	return err
}

func becomePrimary(cfg *config, f *files, lock ownerLock) (*Instance, error) {
	inst := &Instance{
		primary:  true,
		cfg:      cfg,
		files:    f,
		lock:     lock,
		recvDone: make(chan struct{}),
		notify:   make(chan struct{}, 1),
		closed:   make(chan struct{}),
	}
	size := cfg.layout.Size()
	reg, err := f.createRegion(size)
	if err != nil {
		return nil, err
	}
	inst.region = reg
	// The region's pages are the file system's when first written: on a
	// full one (a tmpfs), that write faults.
	if ferr := catchFault(func() { err = inst.initRegion() }); ferr != nil {
		err = fmt.Errorf("%w: writing the new region (a full file system?): %w", ErrLockUnavailable, ferr)
	}
	if err != nil {
		inst.closeRegion()
		return nil, err
	}
	bell, err := f.doorbell(inst.view.BellWord(), cfg.bell, -1, true)
	if err != nil {
		inst.closeRegion()
		return nil, err
	}
	inst.bell = bell
	inst.sharedBell = cfg.bell == bellFutex
	if inst.serveBell, err = f.serveDoorbell(inst.view.BellWord(), cfg.bell, true); err != nil {
		inst.closeRegion()
		return nil, err
	}
	inst.serveOwn = !inst.sharedBell && inst.serveBell != nil
	go inst.receive()
	inst.startGuard()
	return inst, nil
}

var started = time.Now()

// pid is this process's id, which os.Getpid asks the kernel for each time.
var pid = sync.OnceValue(os.Getpid)

// initRegion lays out a fresh region with a generation later than the one
// found, then wakes the senders of the old generation so that they retry.
func (inst *Instance) initRegion() error {
	b := inst.region.Bytes()
	gen, ok := handoff.PreviousGeneration(b)
	if ok {
		gen++
	} else {
		gen = uint64(time.Now().UnixNano())
	}
	view, err := handoff.Init(b, inst.cfg.layout, owner(), gen, inst.cfg.bell)
	if err != nil {
		return err
	}
	if inst.slotBells == nil {
		inst.slotBells = make([]shm.Doorbell, inst.cfg.layout.Slots)
	}
	inst.view = view
	inst.publishIdle()
	old := inst.rc
	inst.rc = newReceiver(inst.cfg, inst.files, view, inst.slotBells)
	// Messages queued through the old receiver cannot be answered: their
	// senders see their slots reset and send them again. Those of regions
	// retired after a removal stay: their slots were not reset.
	inst.queue = slices.DeleteFunc(inst.queue, func(p *pending) bool { return p.rc == old })
	for i := range inst.slotBells {
		inst.wakeSlot(i)
	}
	return nil
}

func owner() handoff.Owner { return handoff.Owner{PID: pid(), Start: started.UnixNano()} }

// newReceiver receives through view, whose files and slot bells (filled
// in as used) are f and bells: a receiver rings its own region's senders,
// even once another region has replaced it.
func newReceiver(cfg *config, f *files, view *handoff.Region, bells []shm.Doorbell) *handoff.Receiver {
	wake := func(i int) { ringSlot(cfg, f, view, bells, i) }
	return handoff.NewReceiver(view, cfg.maxMessage, wake, processAlive)
}

// wakeSlot rings the sender waiting on slot i. Called with mu held.
func (inst *Instance) wakeSlot(i int) { ringSlot(inst.cfg, inst.files, inst.view, inst.slotBells, i) }

// ringSlot rings the sender waiting on slot i of view. Called with mu held.
func ringSlot(cfg *config, f *files, view *handoff.Region, bells []shm.Doorbell, i int) {
	b := bells[i]
	if b == nil {
		var err error
		if b, err = f.doorbell(view.SlotWord(i), cfg.bell, i, false); err != nil {
			return // the sender re-reads its slot at least every handoff.CheckEvery
		}
		bells[i] = b
	}
	b.Ring()
}

// receive is the primary's loop: it sleeps on the doorbell and, when it
// rings, moves every slot along and queues the messages completed.
func (inst *Instance) receive() {
	defer close(inst.recvDone)
	for {
		if testHookReceiverRound != nil {
			testHookReceiverRound(inst)
		}
		r, open := inst.poll()
		if !open {
			return
		}
		if r.queued {
			// Let Serve, just made runnable on this thread, answer before
			// this goroutine sleeps in the kernel: a handoff to another
			// thread costs the secondary more than the answer takes.
			runtime.Gosched()
		}
		var rung bool
		if catchFault(func() { rung = busyAfterWork(r.word, r.seen) }) == nil && rung {
			continue // rung again meanwhile: no need to sleep
		}
		// The FIFO doorbell reads the word first: a fault there (the file
		// cut short) is repaired by the next round.
		var err error
		if fault := catchFault(func() { err = waitAs(r, bellReceiver).Wait(r.seen, -1) }); fault != nil {
			err = fault
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond) // do not spin on a broken doorbell
		}
	}
}

// testHookReceiverRound, set by tests, runs at each round of the receiver.
var testHookReceiverRound func(*Instance)

// testHookServeWaits, set by tests, runs as an idle Serve is about to wait
// on the doorbell.
var testHookServeWaits func(*Instance)

// The sets of a futex doorbell's waiters. Senders ring the Serve calls
// alone while the region counts some waiting (see handoff.Sender.Serving):
// the receiver would only wake to find the message taken, and waking a
// second thread costs a secondary more than the answer takes.
const (
	bellReceiver uint32 = 1 << iota
	bellServe
)

// waitAs returns the doorbell to wait on for round r as a member of set:
// the Serve calls' own bell (with a futex, for the Serve that holds it, a
// watch of the lock file that its Serve set's rings also ring: see
// serveBell), or, with a futex, one that only the rings of that set (and
// the plain ones) wake, or the doorbell itself.
func waitAs(r round, set uint32) shm.Doorbell {
	if set == bellServe && r.serve != nil && (!r.shared || r.watch) {
		return r.serve
	}
	if r.shared {
		if b, err := shm.NewFutexBellSet(r.word, set); err == nil {
			return b
		}
	}
	return r.bell
}

// servesOnBell reports whether an idle Serve waits on a doorbell (see
// sharedBell).
func (inst *Instance) servesOnBell() bool { return inst.sharedBell || inst.serveOwn }

// publishIdle writes the count of Serve calls waiting on the doorbell into
// the region, for senders. Called with mu held.
func (inst *Instance) publishIdle() {
	if inst.servesOnBell() {
		catchFault(func() { atomic.StoreUint32(inst.view.ServingWord(), uint32(inst.idle)) })
	}
}

// stopWaiting counts a Serve call out of those waiting on the doorbell,
// and the watch of the lock file free if it waited on it. Called with mu
// held.
func (inst *Instance) stopWaiting(watching bool) {
	if watching {
		inst.watched = false
	}
	inst.idle--
	inst.publishIdle()
	inst.waiters.Done()
}

// wakeServing wakes the Serve calls waiting on the doorbell.
func (inst *Instance) wakeServing() {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if !inst.torn {
		inst.ringServingLocked()
	}
}

// ringServingLocked rings the Serve calls waiting on the doorbell. Called
// with mu held.
func (inst *Instance) ringServingLocked() {
	if inst.serveBell != nil {
		ringRegion(inst.view, inst.serveBell)
		return
	}
	inst.ringLocked()
}

// ringLocked rings this primary's doorbell. Called with mu held.
func (inst *Instance) ringLocked() { ringRegion(inst.view, inst.bell) }

// ringRegion rings the doorbell of view as a sender does: the word moves
// first, so that a waiter about to sleep on its old value does not.
func ringRegion(view *handoff.Region, bell shm.Doorbell) {
	catchFault(func() { atomic.AddUint32(view.BellWord(), 1) })
	bell.Ring()
}

// busyAfterWork watches the doorbell word for a moment after a round of
// work, when more rings tend to follow (a reply's acknowledgement, the next
// chunk, other launches), and reports whether it changed. An idle primary
// never spins: only a round that was rung for does.
func busyAfterWork(word *uint32, seen uint32) bool {
	const spin = 20 * time.Microsecond
	for end := time.Now().Add(spin); time.Now().Before(end); runtime.Gosched() {
		if atomic.LoadUint32(word) != seen {
			return true
		}
	}
	return false
}

// A round is one pass of the receiver over the regions: the doorbell to
// wait on next, its word, and the word's value before the round.
type round struct {
	bell   shm.Doorbell
	serve  shm.Doorbell // inst.serveBell
	shared bool         // inst.sharedBell
	watch  bool         // a Serve's: it waits on serve, the watch (see Instance.watched)
	word   *uint32
	seen   uint32
	queued bool // messages were queued
}

// poll runs one round of the receiver; open is false once the instance is
// closing.
func (inst *Instance) poll() (r round, open bool) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.closing {
		return round{}, false
	}
	return inst.pollLocked(), true
}

// pollLocked runs one round of the receiver. Called with mu held.
func (inst *Instance) pollLocked() round {
	// The word stays where it is: a repair lays a new region over the same
	// mapping.
	r := round{bell: inst.bell, serve: inst.serveBell, shared: inst.sharedBell, word: inst.view.BellWord()}
	r.queued = inst.pollRetired()
	var done []handoff.Incoming
	if err := catchFault(func() {
		r.seen = atomic.LoadUint32(r.word)
		inst.view.Probe()
		if !inst.view.HeaderIntact() {
			inst.repair()
		}
		done, _ = inst.rc.Poll()
	}); err != nil {
		catchFault(inst.repair) // the next ring tries again if this faults too
		return r
	}
	for _, in := range done {
		r.queued = inst.accept(in, inst.rc) || r.queued
	}
	return r
}

// accept queues a message received through rc, or answers it if it does
// not decode, and reports whether it queued it. Called with mu held.
func (inst *Instance) accept(in handoff.Incoming, rc *handoff.Receiver) bool {
	m, err := handoff.DecodeMessage(in.Data)
	if err != nil {
		inst.sendReply(in, rc, handoff.EncodeReply(2, []byte(err.Error())))
		return false
	}
	inst.queue = append(inst.queue, &pending{in: in, rc: rc, msg: newMessage(m)})
	inst.signalQueued()
	return true
}

// signalQueued wakes a waiting Serve, if any. Called with mu held.
func (inst *Instance) signalQueued() {
	select {
	case inst.notify <- struct{}{}:
	default:
	}
	if inst.idle > 0 {
		inst.ringServingLocked()
	}
}

// repair restores a region that another process damaged (changed its
// header, or truncated the file) with a new generation. Messages in flight
// are lost to their senders, which retry. Called with mu held.
func (inst *Instance) repair() {
	inst.faults++
	inst.files.restoreRegion(inst.cfg.layout.Size())
	inst.initRegion()
}

func newMessage(m *handoff.Message) *Message {
	msg := &Message{Args: m.Args, Dir: m.Dir, PID: m.PID, Time: time.Unix(0, m.Time), Data: m.Data}
	if msg.Args == nil {
		msg.Args = []string{}
	}
	msg.Env = make(map[string]string, len(m.Env))
	for _, e := range m.Env {
		msg.Env[e.Name] = e.Value
	}
	return msg
}

func (c *config) encodeMessage() ([]byte, error) {
	dir, err := syscall.Getwd() // os.Getwd would also stat $PWD and "."
	if err != nil {
		dir = ""
	}
	m := handoff.Message{Args: c.args, Dir: dir, PID: pid(), Time: time.Now().UnixNano(), Data: c.data}
	names := activationEnv
	if len(c.env) > 0 {
		names = append(slices.Clone(activationEnv), c.env...)
		slices.Sort(names)
		names = slices.Compact(names)
	}
	for _, name := range names {
		if v, ok := os.LookupEnv(name); ok {
			m.Env = append(m.Env, handoff.EnvVar{Name: name, Value: v})
		}
	}
	if n := m.EncodedSize(); n > c.maxMessage {
		return nil, fmt.Errorf("%w: %d bytes encoded, the limit is %d", ErrTooLarge, n, c.maxMessage)
	}
	b, err := m.Encode(make([]byte, 0, m.EncodedSize()))
	if err != nil { // a field over 4 GiB, under a maximum above that
		return nil, fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return b, nil
}

// IsPrimary reports whether this process is the primary.
func (inst *Instance) IsPrimary() bool { return inst.primary }

// Reply is the primary's answer to a secondary's message. It is the zero
// Reply for the primary.
func (inst *Instance) Reply() Reply { return inst.reply }

// Serve calls h for each message forwarded to the primary, in the order
// they arrived, and sends each sender h's reply. Messages that arrived
// before Serve was called are queued, not dropped. It returns ctx's error
// when ctx is done, or ErrClosed after Release (at once on a secondary,
// which has no messages to serve). If h panics, the sender is answered
// with code 2 and the panic goes on. One Serve handles one
// message at a time; call it from several goroutines to handle messages
// concurrently.
func (inst *Instance) Serve(ctx context.Context, h Handler) error {
	if !inst.primary {
		return fmt.Errorf("%w: Serve on a secondary", ErrClosed)
	}
	// waiting: this call counts in inst.idle, from before its wait on the
	// doorbell until it next holds mu. watching: it waits on the watch of
	// the lock file (see Instance.watched).
	waiting, watching := false, false
	if inst.servesOnBell() {
		defer context.AfterFunc(ctx, inst.wakeServing)()
		defer func() {
			if waiting {
				inst.mu.Lock()
				inst.stopWaiting(watching)
				inst.mu.Unlock()
			}
		}()
	}
	for {
		inst.mu.Lock()
		if waiting {
			// Counted out before polling: a sender that rings after the
			// poll read the word sees the count without this call (see
			// handoff.Sender.ring), and wakes the receiver if no other
			// Serve waits.
			inst.stopWaiting(watching)
			waiting, watching = false, false
		}
		if inst.closing {
			inst.mu.Unlock()
			return ErrClosed
		}
		var r round
		if len(inst.queue) == 0 && (inst.sharedBell || inst.serveOwn && inst.idle == 0) {
			r = inst.pollLocked()
		}
		var p *pending
		if len(inst.queue) > 0 {
			p = inst.queue[0]
			inst.queue[0] = nil
			inst.queue = inst.queue[1:]
			if len(inst.queue) > 0 {
				inst.signalQueued() // another Serve may take the next one now
			}
			inst.inflight++
		} else if r.bell != nil {
			inst.idle++
			inst.waiters.Add(1)
			inst.publishIdle()
			waiting = true
			if r.shared && r.serve != nil && !inst.watched {
				inst.watched, watching, r.watch = true, true, true
			}
		}
		inst.mu.Unlock()
		if p != nil {
			inst.handle(p, h)
			continue
		}
		if r.bell != nil {
			var err error
			if ctx.Err() == nil { // it may have ended while a handler ran
				if testHookServeWaits != nil {
					testHookServeWaits(inst)
				}
				// The FIFO doorbell reads the word first: a fault there
				// (the file cut short since the poll) is repaired by the
				// next poll.
				if fault := catchFault(func() { err = waitAs(r, bellServe).Wait(r.seen, -1) }); fault != nil {
					err = fault
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond) // do not spin on a broken doorbell
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-inst.closed:
			return ErrClosed
		case <-inst.notify:
		}
	}
}

// handle answers p with h's reply. If h panics, the sender is answered
// with code 2, as for a message that does not decode, and the panic goes
// on: a program that recovers it still has an instance that Release can
// finish.
func (inst *Instance) handle(p *pending, h Handler) {
	r := Reply{Code: 2, Data: []byte("instance: the primary's handler panicked")}
	defer func() { inst.answer(p, r) }()
	r = h(p.msg)
}

// answer sends a handler's reply, even after Release: the last handler to
// answer then finishes the release.
func (inst *Instance) answer(p *pending, r Reply) {
	data := handoff.EncodeReply(int32(r.Code), r.Data)
	inst.mu.Lock()
	if !inst.torn {
		inst.sendReply(p.in, p.rc, data)
	}
	inst.inflight--
	last := inst.closing && inst.inflight == 0
	inst.mu.Unlock()
	if last {
		inst.teardown()
	}
}

// sendReply sends an encoded reply through rc, if rc is still the current
// receiver or one of a region retired after its files were removed (after
// a re-initialisation the sender retries). Called with mu held.
func (inst *Instance) sendReply(in handoff.Incoming, rc *handoff.Receiver, data []byte) {
	if rc != inst.rc {
		if inst.isRetired(rc) {
			catchFault(func() { rc.Reply(in, data) })
		}
		return
	}
	if catchFault(func() { rc.Reply(in, data) }) != nil {
		inst.repair()
	}
}

// catchFault runs f, which touches a mapping, and returns the memory fault
// it met, if any: another process may truncate the file under us. Other
// panics go on.
func catchFault(f func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			err = fmt.Errorf("memory fault: %v", r)
		}
	}()
	f()
	return nil
}

// nudge rings both kinds of doorbell of a region whose header does not
// parse, so that a primary whose region was damaged wakes up and repairs
// it. Waking a waiter that has nothing to do is harmless.
func nudge(f *files, b []byte) {
	word := handoff.BellWordOf(b)
	if word == nil {
		return
	}
	for _, kind := range []uint32{bellFutex, bellFIFO, bellEvent} { // the ones this OS lacks fail
		if bell, err := f.doorbell(word, kind, -1, false); err == nil {
			bell.Ring()
			bell.Close()
		}
	}
}

// Release gives up being the primary. Messages not yet handed to a handler
// are left to their senders, which send them again, to the next primary.
// Handlers already running still answer, and the release completes when
// the last of them has: Release returns at once if any is running, so a
// handler may call it (for a --quit command, say). A handler's reply
// longer than one slot (16 KiB) may then be cut short and its message sent
// again. The lock file stays (removing it would let two primaries run);
// the shared region stays for the next primary to re-initialise. Release is
// a no-op when called again. A secondary's Release unmaps the region and
// closes the lock file, which its exit does as well.
func (inst *Instance) Release() error {
	if !inst.primary {
		inst.mu.Lock()
		defer inst.mu.Unlock()
		if inst.spent == nil {
			return nil
		}
		inst.spentCleanup.Stop()
		err := inst.spent.close()
		inst.spent = nil
		return err
	}
	inst.mu.Lock()
	if inst.closing {
		inst.mu.Unlock()
		return nil
	}
	inst.closing = true
	running := inst.inflight
	inst.mu.Unlock()
	close(inst.closed)
	if inst.servesOnBell() {
		inst.wakeServing() // Serve calls waiting on the doorbell return
	}
	if running > 0 {
		return nil // the last handler to answer finishes the release
	}
	return inst.teardown()
}

// teardown stops the receiver, closes the region to senders, unmaps it and
// drops the lock. It runs once, after closing, with no handler running.
func (inst *Instance) teardown() error {
	inst.stopGuard() // no region replaces this one from here on
	inst.stopForwards()
	ringRegion(inst.view, inst.bell)
	<-inst.recvDone
	inst.waiters.Wait() // Release woke them; an event must not close under their wait

	inst.mu.Lock()
	defer inst.mu.Unlock()
	catchFault(inst.view.Close)
	for i := range inst.slotBells {
		inst.wakeSlot(i)
	}
	inst.queue = nil
	inst.torn = true
	err := inst.closeRegion()
	return errors.Join(err, inst.lock.Close())
}

// closeRegion closes the bells and unmaps the region, and the regions
// retired.
func (inst *Instance) closeRegion() error {
	var errs []error
	for _, r := range inst.retired {
		errs = append(errs, r.close(inst.cfg))
	}
	for _, b := range inst.slotBells {
		if b != nil {
			errs = append(errs, b.Close())
		}
	}
	if inst.bell != nil {
		errs = append(errs, inst.bell.Close())
	}
	if inst.serveBell != nil {
		errs = append(errs, inst.serveBell.Close())
	}
	if inst.region != nil {
		errs = append(errs, inst.region.Close())
	}
	return errors.Join(errs...)
}
