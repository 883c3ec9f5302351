package handoff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// These tests run both sides of the mailbox in one process: a goroutine
// plays the primary, others the senders, over a region in ordinary memory.
// Nothing here depends on speed: every wait is bounded by testDeadline,
// which only a hung test reaches.
const testDeadline = 10 * time.Second

// small is a layout whose chunks are small enough that messages of a few
// KiB take many round trips.
var small = Layout{Slots: 4, SlotData: MinSlotData}

func alignedBytes(n int) []byte {
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
}

// testBell is a Bell over one word, as a futex is: Wait returns at once if
// the word no longer holds old, else when the bell rings or the timeout
// passes.
type testBell struct {
	word *uint32
	mu   sync.Mutex
	ch   chan struct{}
}

func newTestBell(word *uint32) *testBell { return &testBell{word: word, ch: make(chan struct{})} }

func (b *testBell) Wait(old uint32, timeout time.Duration) error {
	b.mu.Lock()
	ch := b.ch // taken before the word is read, so a ring in between is not lost
	b.mu.Unlock()
	if atomic.LoadUint32(b.word) != old {
		return nil
	}
	if timeout < 0 {
		<-ch
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
	return nil
}

func (b *testBell) Ring() error {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
	return nil
}

// hookBell calls hook after each ring with the count so far. A sender's
// process can be preempted, stopped or killed right after it rings the
// primary; the hook plays that moment.
type hookBell struct {
	Bell
	n    int
	hook func(n int)
}

func (b *hookBell) Ring() error {
	err := b.Bell.Ring()
	b.n++
	b.hook(b.n)
	return err
}

// answer is the primary's reply to msg: a function of all its bytes, about
// twice as long.
func answer(msg []byte) []byte {
	out := append([]byte("reply:"), msg...)
	for i := len(msg) - 1; i >= 0; i-- {
		out = append(out, msg[i]^0x5a)
	}
	return out
}

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// harness is a region with the primary's side: a Receiver, its doorbell
// and one doorbell per slot.
type harness struct {
	t       *testing.T
	r       *Region
	primary *testBell
	slots   []*testBell

	mu       sync.Mutex // serialises the Receiver, as the Receiver requires
	rc       *Receiver
	respond  func(in Incoming) (reply []byte, ok bool) // ok false: hold the message unanswered
	received []Incoming
	held     []Incoming
	refused  int
	replyErr []error
}

func alive(int) bool { return true }

// newHarness lays out a region. The primary does not run until serve; a
// test can instead drive it by calling poll.
func newHarness(t *testing.T, l Layout, max int, primaryAlive func(pid int) bool) *harness {
	t.Helper()
	r, err := Init(alignedBytes(l.Size()), l, Owner{PID: 1, Start: 1}, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, r: r, primary: newTestBell(r.BellWord())}
	for i := range l.Slots {
		h.slots = append(h.slots, newTestBell(r.SlotWord(i)))
	}
	h.rc = NewReceiver(r, max, func(i int) { h.slots[i].Ring() }, primaryAlive)
	h.respond = func(in Incoming) ([]byte, bool) { return answer(in.Data), true }
	return h
}

// poll runs one round of the primary: Poll, then a reply to each message
// completed.
func (h *harness) poll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	done, refused := h.rc.Poll()
	h.refused += refused
	for _, in := range done {
		h.received = append(h.received, in)
		if reply, ok := h.respond(in); ok {
			if err := h.rc.Reply(in, reply); err != nil {
				h.replyErr = append(h.replyErr, err)
			}
		} else {
			h.held = append(h.held, in)
		}
	}
}

// serve runs the primary in a goroutine until the test ends: it polls, then
// sleeps on its doorbell. The timeout lets it notice stale slots, as a
// primary must.
func (h *harness) serve() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			seen := atomic.LoadUint32(h.r.BellWord())
			h.poll()
			select {
			case <-stop:
				return
			default:
			}
			h.primary.Wait(seen, 20*time.Millisecond)
		}
	}()
	h.t.Cleanup(func() {
		close(stop)
		h.primary.Ring()
		<-done
	})
}

func (h *harness) sender(pid int) *Sender {
	return &Sender{
		Region:   h.r,
		Primary:  h.primary,
		Slot:     func(i int) (Bell, error) { return h.slots[i], nil },
		Alive:    alive,
		Check:    func() error { return nil },
		PID:      pid,
		MaxReply: 1 << 20,
	}
}

func (h *harness) locked(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f()
}

func (h *harness) slotState(i int) (seq, st uint32) {
	_, seq, st = parts(atomic.LoadUint64(h.r.slotState(i)))
	return seq, st
}

func (h *harness) allFree(t *testing.T) {
	t.Helper()
	for i := range h.r.layout.Slots {
		if _, st := h.slotState(i); st != stFree {
			t.Errorf("slot %d is in state %d, want free", i, st)
		}
	}
}

// receivedFrom returns what the primary has received from pid.
func (h *harness) receivedFrom(pid int) (msgs [][]byte) {
	h.locked(func() {
		for _, in := range h.received {
			if in.PID == pid {
				msgs = append(msgs, in.Data)
			}
		}
	})
	return msgs
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %v", what, testDeadline)
		}
		time.Sleep(time.Millisecond)
	}
}

// sendAsync runs s.Send in a goroutine and returns its outcome on a channel.
type result struct {
	reply []byte
	err   error
}

func sendAsync(s *Sender, msg []byte) <-chan result {
	c := make(chan result, 1)
	go func() {
		reply, err := s.Send(msg, time.Now().Add(testDeadline))
		c <- result{reply, err}
	}()
	return c
}

func wait(t *testing.T, c <-chan result) result {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(2 * testDeadline):
		t.Fatal("Send did not return")
		return result{}
	}
}

func TestSendSmallMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, small, 1<<16, alive)
	h.serve()
	s := h.sender(1001)
	for i := range 20 {
		msg := fmt.Appendf(nil, "hello %d", i)
		reply, err := s.Send(msg, time.Now().Add(testDeadline))
		if err != nil {
			got := h.receivedFrom(1001)
			t.Fatalf("send %d: %v (the primary has received %d of the %d messages sent)", i, err, len(got), i+1)
		}
		if want := answer(msg); !bytes.Equal(reply, want) {
			t.Fatalf("send %d: reply %q, want %q", i, reply, want)
		}
	}
	got := h.receivedFrom(1001)
	if len(got) != 20 {
		t.Fatalf("the primary received %d messages from the sender, want 20", len(got))
	}
	for i, m := range got {
		if want := fmt.Sprintf("hello %d", i); string(m) != want {
			t.Errorf("message %d arrived as %q, want %q", i, m, want)
		}
	}
	h.allFree(t)
}

func TestSendManyChunks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, small, 1<<16, alive)
	var respond func([]byte) []byte
	h.respond = func(in Incoming) ([]byte, bool) { return respond(in.Data), true }
	h.serve()
	d := small.SlotData
	for _, tc := range []struct {
		name    string
		size    int
		respond func([]byte) []byte
	}{
		{"empty message", 0, answer},
		{"one byte", 1, answer},
		{"one chunk less a byte", d - 1, answer},
		{"exactly one chunk", d, answer},
		{"one chunk and a byte", d + 1, answer},
		{"exactly two chunks", 2 * d, answer},
		{"reply of exactly one chunk", (d - 6) / 2, answer},
		{"reply of exactly two chunks", (2*d - 6) / 2, answer},
		{"four chunks each way and more", 4*d + 100, answer},
		{"twenty chunks each way", 20 * d, answer},
		{"large message, empty reply", 6*d + 3, func([]byte) []byte { return nil }},
		{"large message, one byte reply", 6*d + 3, func([]byte) []byte { return []byte{1} }},
		{"one byte message, large reply", 1, func(m []byte) []byte { return bytes.Repeat(m, 9*d+5) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := randomBytes(1, tc.size)
			want := tc.respond(msg)
			h.locked(func() { respond = tc.respond })
			reply, err := h.sender(2000).Send(msg, time.Now().Add(testDeadline))
			if err != nil {
				t.Fatalf("Send of %d bytes: %v", len(msg), err)
			}
			if !bytes.Equal(reply, want) {
				t.Fatalf("sent %d bytes, got a reply of %d bytes, want %d bytes", len(msg), len(reply), len(want))
			}
			var got []byte
			h.locked(func() {
				got = h.received[len(h.received)-1].Data
			})
			if !bytes.Equal(got, msg) {
				t.Fatalf("sent %d bytes, the primary received %d different bytes", len(msg), len(got))
			}
			h.allFree(t)
		})
	}
}

func TestManySenders(t *testing.T) {
	t.Parallel()
	const senders, each = 40, 3 // ten times as many senders as slots
	h := newHarness(t, small, 1<<16, alive)
	h.serve()
	message := func(g, k int) []byte {
		m := fmt.Appendf(nil, "sender %d message %d:", g, k)
		return append(m, randomBytes(uint64(g), (g*37+k*211)%(5*small.SlotData))...)
	}
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := h.sender(5000 + g)
			for k := range each {
				msg := message(g, k)
				reply, err := s.Send(msg, time.Now().Add(testDeadline))
				switch {
				case err != nil:
					errs <- fmt.Errorf("sender %d message %d: %w", g, k, err)
				case !bytes.Equal(reply, answer(msg)):
					errs <- fmt.Errorf("sender %d message %d: got a reply of %d bytes that is not its own", g, k, len(reply))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	count := make(map[string]int)
	h.locked(func() {
		for _, in := range h.received {
			count[string(in.Data)]++
			if want := fmt.Sprintf("sender %d ", in.PID-5000); !bytes.HasPrefix(in.Data, []byte(want)) {
				t.Errorf("a message from PID %d begins %q", in.PID, in.Data[:min(len(in.Data), 24)])
			}
		}
		if len(h.replyErr) > 0 {
			t.Errorf("Reply failed %d times: %v", len(h.replyErr), h.replyErr[0])
		}
		if h.refused != 0 {
			t.Errorf("the primary refused %d chunks from honest senders", h.refused)
		}
	})
	for g := range senders {
		for k := range each {
			if n := count[string(message(g, k))]; n != 1 {
				t.Errorf("sender %d message %d was delivered %d times", g, k, n)
			}
		}
	}
	h.allFree(t)
}

// TestShortLivedSenders: secondaries exit as soon as they have their reply,
// so the PID left behind in a free slot soon belongs to nobody. No sender
// here dies while it sends, nothing is re-initialised: every Send must get
// its own reply, and every message arrive once, under its sender's PID.
func TestShortLivedSenders(t *testing.T) {
	// Not parallel: should two senders share a slot, the race detector
	// fails every test running at the time.
	workers, each := 16, 3000
	if testing.Short() {
		each = 300
	}
	h := newHarness(t, Layout{Slots: 2, SlotData: MinSlotData}, 1<<16, alive)
	h.serve()
	var running sync.Map // the PIDs of senders now running
	var nextPID atomic.Int64
	nextPID.Store(10000)
	message := func(pid int) []byte {
		return fmt.Appendf(nil, "%d.%s", pid, bytes.Repeat([]byte{'.'}, pid%300))
	}
	var mu sync.Mutex
	failures := make(map[string]int)
	example := make(map[string]string)
	fail := func(kind, detail string) {
		mu.Lock()
		defer mu.Unlock()
		if failures[kind]++; failures[kind] == 1 {
			example[kind] = detail
		}
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				pid := int(nextPID.Add(1))
				running.Store(pid, true)
				s := h.sender(pid)
				s.Alive = func(p int) bool { _, ok := running.Load(p); return ok }
				msg := message(pid)
				reply, err := s.Send(msg, time.Now().Add(testDeadline))
				running.Delete(pid) // the process exits
				switch {
				case err != nil:
					fail("Send failed", fmt.Sprintf("PID %d: %v", pid, err))
				case !bytes.Equal(reply, answer(msg)):
					fail("got another sender's reply", fmt.Sprintf("PID %d got %q", pid, reply[:min(len(reply), 16)]))
				}
			}
		}()
	}
	wg.Wait()
	count := make(map[string]int)
	h.locked(func() {
		for _, in := range h.received {
			count[string(in.Data)]++
			if !bytes.Equal(in.Data, message(in.PID)) {
				fail("message arrived under another PID", fmt.Sprintf("%q from PID %d", in.Data[:min(len(in.Data), 8)], in.PID))
			}
		}
	})
	for data, n := range count {
		if n > 1 {
			fail("message delivered more than once", fmt.Sprintf("%q %d times", data[:min(len(data), 8)], n))
		}
	}
	for kind, n := range failures {
		t.Errorf("%s: %d times of %d sends, for example %s", kind, n, workers*each, example[kind])
	}
}

func TestSendTimeout(t *testing.T) {
	t.Parallel()
	t.Run("primary never replies", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
		h.respond = func(in Incoming) ([]byte, bool) {
			if bytes.HasPrefix(in.Data, []byte("ignore")) {
				return nil, false
			}
			return answer(in.Data), true
		}
		h.serve()
		_, err := h.sender(1).Send([]byte("ignore me"), time.Now().Add(300*time.Millisecond))
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Send to a primary that never replies: %v, want ErrTimeout", err)
		}
		if _, st := h.slotState(0); st != stFree {
			t.Fatalf("after the timeout the only slot is in state %d, want free", st)
		}
		// The slot serves the next sender.
		reply, err := h.sender(2).Send([]byte("hello"), time.Now().Add(testDeadline))
		if err != nil || !bytes.Equal(reply, answer([]byte("hello"))) {
			t.Fatalf("Send after a timed-out sender: %q, %v", reply, err)
		}
		if got := h.receivedFrom(2); len(got) != 1 {
			t.Fatalf("the primary received %d messages from the second sender, want 1", len(got))
		}
	})
	t.Run("every slot busy", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
		h.respond = func(Incoming) ([]byte, bool) { return nil, false }
		h.serve()
		first := sendAsync(h.sender(1), []byte("first"))
		eventually(t, "the first message to arrive", func() bool { return len(h.receivedFrom(1)) == 1 })
		_, err := h.sender(2).Send([]byte("second"), time.Now().Add(300*time.Millisecond))
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Send while the only slot is busy: %v, want ErrTimeout", err)
		}
		// The first sender is unharmed.
		h.locked(func() {
			if err := h.rc.Reply(h.held[0], []byte("late")); err != nil {
				t.Errorf("Reply to the first sender: %v", err)
			}
		})
		if r := wait(t, first); r.err != nil || string(r.reply) != "late" {
			t.Fatalf("first sender: %q, %v", r.reply, r.err)
		}
		if got := h.receivedFrom(2); len(got) != 0 {
			t.Fatalf("the timed-out message was delivered: %q", got)
		}
	})
}

func TestSendCheckAborts(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	t.Run("waiting for the reply", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
		h.respond = func(Incoming) ([]byte, bool) { return nil, false }
		h.serve()
		s := h.sender(1)
		s.Check = func() error {
			var delivered bool
			h.locked(func() { delivered = len(h.held) > 0 })
			if delivered {
				return errBoom
			}
			return nil
		}
		_, err := s.Send([]byte("message"), time.Now().Add(testDeadline))
		if !errors.Is(err, errBoom) {
			t.Fatalf("Send with a failing Check: %v, want %v", err, errBoom)
		}
		if _, st := h.slotState(0); st != stFree {
			t.Fatalf("after the abort the only slot is in state %d, want free", st)
		}
	})
	t.Run("waiting for a slot", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
		h.respond = func(Incoming) ([]byte, bool) { return nil, false }
		h.serve()
		first := sendAsync(h.sender(1), []byte("first"))
		eventually(t, "the first message to arrive", func() bool { return len(h.receivedFrom(1)) == 1 })
		s := h.sender(2)
		s.Check = func() error { return errBoom }
		if _, err := s.Send([]byte("second"), time.Now().Add(testDeadline)); !errors.Is(err, errBoom) {
			t.Fatalf("Send with a failing Check while the only slot is busy: %v, want %v", err, errBoom)
		}
		h.locked(func() { h.rc.Reply(h.held[0], []byte("ok")) })
		if r := wait(t, first); r.err != nil || string(r.reply) != "ok" {
			t.Fatalf("first sender: %q, %v", r.reply, r.err)
		}
	})
}

// giveUp starts a sender whose Check fails once told to, waits until the
// primary (driven by hand) holds its message, makes it give up and returns
// the message it sent.
func giveUp(t *testing.T, h *harness, pid int) Incoming {
	t.Helper()
	errGaveUp := errors.New("gave up")
	var quit atomic.Bool
	s := h.sender(pid)
	s.Check = func() error {
		if quit.Load() {
			return errGaveUp
		}
		return nil
	}
	c := sendAsync(s, []byte("are you there?"))
	var in Incoming
	eventually(t, "the message to arrive", func() bool {
		h.poll()
		h.locked(func() {
			if len(h.held) > 0 {
				in = h.held[0]
			}
		})
		return in.Data != nil
	})
	quit.Store(true)
	if r := wait(t, c); !errors.Is(r.err, errGaveUp) {
		t.Fatalf("Send: %q, %v, want %v", r.reply, r.err, errGaveUp)
	}
	return in
}

func TestReplyAfterSenderGaveUp(t *testing.T) {
	t.Parallel()
	newHeld := func(t *testing.T) *harness {
		h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
		h.respond = func(Incoming) ([]byte, bool) { return nil, false }
		return h
	}
	t.Run("before the next poll", func(t *testing.T) {
		t.Parallel()
		h := newHeld(t)
		in := giveUp(t, h, 1)
		if err := h.rc.Reply(in, []byte("too late")); !errors.Is(err, ErrLost) {
			t.Fatalf("Reply: %v, want ErrLost", err)
		}
		if _, st := h.slotState(0); st != stFree {
			t.Fatalf("Reply to a sender that gave up moved its slot to state %d", st)
		}
	})
	t.Run("after a poll", func(t *testing.T) {
		t.Parallel()
		h := newHeld(t)
		in := giveUp(t, h, 1)
		h.poll()
		if err := h.rc.Reply(in, []byte("too late")); !errors.Is(err, ErrLost) {
			t.Fatalf("Reply: %v, want ErrLost", err)
		}
	})
	t.Run("after another sender took the slot", func(t *testing.T) {
		t.Parallel()
		h := newHeld(t)
		in := giveUp(t, h, 1)
		h.respond = func(in Incoming) ([]byte, bool) { return answer(in.Data), true }
		c := sendAsync(h.sender(2), []byte("next"))
		eventually(t, "the next sender to post its message", func() bool {
			seq, st := h.slotState(0)
			return seq != in.seq && st == stReq
		})
		if err := h.rc.Reply(in, []byte("too late")); !errors.Is(err, ErrLost) {
			t.Fatalf("Reply: %v, want ErrLost", err)
		}
		h.serve()
		if r := wait(t, c); r.err != nil || !bytes.Equal(r.reply, answer([]byte("next"))) {
			t.Fatalf("the next sender got %q, %v", r.reply, r.err)
		}
	})
}

// stopped starts a sender with pid that stops right after its ring number
// stopAt, as a process stopped (or killed) at that point, until thaw is
// called or the test ends.
func stopped(t *testing.T, h *harness, pid, stopAt int, msg []byte) (c <-chan result, thaw func()) {
	ch := make(chan struct{})
	var once sync.Once
	thaw = func() { once.Do(func() { close(ch) }) }
	s := h.sender(pid)
	s.Primary = &hookBell{Bell: h.primary, hook: func(n int) {
		if n == stopAt {
			<-ch
		}
	}}
	c = sendAsync(s, msg)
	t.Cleanup(thaw)
	return c, thaw
}

// frozen is a sender killed after its ring number freezeAt.
func frozen(t *testing.T, h *harness, pid, freezeAt int, msg []byte) <-chan result {
	c, _ := stopped(t, h, pid, freezeAt, msg)
	return c
}

func TestSenderReclaimsDeadSlot(t *testing.T) {
	t.Parallel()
	const dead = 666
	for _, tc := range []struct {
		name  string
		size  int
		state uint32 // where the dead sender leaves its slot
	}{
		{"after delivery", 10, stRep},
		{"mid-message", 3 * MinSlotData, stReqAck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The primary believes everyone alive: only a sender can
			// reclaim the slot here.
			h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
			h.serve()
			d := frozen(t, h, dead, 1, randomBytes(2, tc.size))
			eventually(t, "the dead sender's slot to settle", func() bool {
				_, st := h.slotState(0)
				return st == tc.state
			})
			deadSeq, _ := h.slotState(0)

			s := h.sender(2)
			s.Alive = func(pid int) bool { return pid != dead }
			msg := randomBytes(3, 2*MinSlotData+10)
			reply, err := s.Send(msg, time.Now().Add(testDeadline))
			if err != nil {
				t.Fatalf("Send with the only slot held by a dead sender: %v", err)
			}
			if !bytes.Equal(reply, answer(msg)) {
				t.Fatal("wrong reply")
			}
			if got := h.receivedFrom(2); len(got) != 1 || !bytes.Equal(got[0], msg) {
				t.Fatalf("the primary received %d messages from the live sender", len(got))
			}
			if seq, _ := h.slotState(0); seq == deadSeq {
				t.Fatal("the slot was reused without a new claim")
			}
			if tc.state == stReqAck {
				if got := h.receivedFrom(dead); len(got) != 0 {
					t.Fatalf("the dead sender's partial message was delivered (%d bytes)", len(got[0]))
				}
			}
			select {
			case r := <-d:
				t.Fatalf("the frozen sender returned: %q, %v", r.reply, r.err)
			default:
			}
		})
	}
}

func TestSenderReclaimThenThaw(t *testing.T) {
	t.Parallel()
	// A sender stopped (not killed) while its slot was taken from it finds
	// the slot gone when it resumes.
	const pid = 667
	h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
	h.serve()
	c, thaw := stopped(t, h, pid, 1, randomBytes(4, 3*MinSlotData))
	eventually(t, "the stopped sender's first chunk to be taken", func() bool {
		_, st := h.slotState(0)
		return st == stReqAck
	})
	other := h.sender(3)
	other.Alive = func(p int) bool { return p != pid }
	if _, err := other.Send([]byte("mine now"), time.Now().Add(testDeadline)); err != nil {
		t.Fatal(err)
	}
	thaw()
	if r := wait(t, c); !errors.Is(r.err, ErrLost) {
		t.Fatalf("the resumed sender got %q, %v, want ErrLost", r.reply, r.err)
	}
	if got := h.receivedFrom(pid); len(got) != 0 {
		t.Fatal("the stopped sender's message was delivered")
	}
	if _, st := h.slotState(0); st != stFree {
		t.Fatalf("slot left in state %d", st)
	}
}

func TestLiveSlotNotReclaimed(t *testing.T) {
	t.Parallel()
	const slow = 668
	for _, tc := range []struct {
		name  string
		size  int
		state uint32
	}{
		{"mid-message", 3 * MinSlotData, stReqAck},
		{"reply waiting", 10, stRep},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
			h.serve()
			msg := randomBytes(9, tc.size)
			c, thaw := stopped(t, h, slow, 1, msg)
			eventually(t, "the slow sender's slot to settle", func() bool {
				_, st := h.slotState(0)
				return st == tc.state
			})
			seq, _ := h.slotState(0)
			// Another sender finds the only slot held by a live claimant:
			// it waits, and times out.
			if _, err := h.sender(2).Send([]byte("me too"), time.Now().Add(300*time.Millisecond)); !errors.Is(err, ErrTimeout) {
				t.Fatalf("Send while a live sender holds the only slot: %v, want ErrTimeout", err)
			}
			if got, st := h.slotState(0); got != seq || st != tc.state {
				t.Fatalf("the live sender's slot moved to sequence %d state %d", got, st)
			}
			thaw()
			if r := wait(t, c); r.err != nil || !bytes.Equal(r.reply, answer(msg)) {
				t.Fatalf("the slow sender: %d bytes, %v", len(r.reply), r.err)
			}
		})
	}
	t.Run("waiting on the primary", func(t *testing.T) {
		t.Parallel()
		// A dead sender's slot that waits on the primary is the primary's
		// to move: no sender may take it from under a pending reply.
		const dead = 666
		h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
		h.respond = func(in Incoming) ([]byte, bool) { return answer(in.Data), in.PID != dead }
		h.serve()
		frozen(t, h, dead, 1, []byte("last words"))
		eventually(t, "the dead sender's message to arrive", func() bool { return len(h.receivedFrom(dead)) == 1 })
		s := h.sender(2)
		s.Alive = func(pid int) bool { return pid != dead }
		if _, err := s.Send([]byte("me"), time.Now().Add(300*time.Millisecond)); !errors.Is(err, ErrTimeout) {
			t.Fatalf("Send while the only slot waits on the primary: %v, want ErrTimeout", err)
		}
		if _, st := h.slotState(0); st != stWaiting {
			t.Fatalf("the slot moved to state %d", st)
		}
		// Once answered, the slot waits on its dead sender and is taken.
		h.locked(func() {
			if err := h.rc.Reply(h.held[0], []byte("unread")); err != nil {
				t.Errorf("Reply: %v", err)
			}
		})
		if reply, err := s.Send([]byte("me"), time.Now().Add(testDeadline)); err != nil || !bytes.Equal(reply, answer([]byte("me"))) {
			t.Fatalf("Send after the reply: %q, %v", reply, err)
		}
	})
}

func TestPrimarySparesLiveSlot(t *testing.T) {
	t.Parallel()
	const slow = 668
	var asked atomic.Int32
	h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, func(pid int) bool {
		if pid == slow {
			asked.Add(1)
		}
		return true
	})
	h.serve()
	msg := randomBytes(10, 3*MinSlotData)
	c, thaw := stopped(t, h, slow, 1, msg)
	eventually(t, "the slow sender's first chunk to be taken", func() bool {
		_, st := h.slotState(0)
		return st == stReqAck
	})
	seq, _ := h.slotState(0)
	// The primary asks about a claimant once its slot has stood still long
	// enough; this one is alive and keeps its slot.
	eventually(t, "the primary to ask whether the slow sender lives", func() bool { return asked.Load() > 0 })
	h.poll()
	if got, st := h.slotState(0); got != seq || st != stReqAck {
		t.Fatalf("the primary moved a live sender's slot to sequence %d state %d", got, st)
	}
	thaw()
	if r := wait(t, c); r.err != nil || !bytes.Equal(r.reply, answer(msg)) {
		t.Fatalf("the slow sender: %d bytes, %v", len(r.reply), r.err)
	}
}

func TestPrimaryReapsDeadSlot(t *testing.T) {
	t.Parallel()
	const dead = 666
	for _, tc := range []struct {
		name  string
		size  int
		state uint32
	}{
		{"after delivery", 10, stRep},
		{"mid-message", 3 * MinSlotData, stReqAck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, func(pid int) bool { return pid != dead })
			h.serve()
			frozen(t, h, dead, 1, randomBytes(5, tc.size))
			eventually(t, "the dead sender's slot to settle", func() bool {
				_, st := h.slotState(0)
				return st == tc.state
			})
			// This sender believes everyone alive: only the primary can
			// free the slot, once it has stood still long enough.
			msg := []byte("after the reaping")
			reply, err := h.sender(2).Send(msg, time.Now().Add(testDeadline))
			if err != nil {
				t.Fatalf("Send with the only slot held by a dead sender: %v", err)
			}
			if !bytes.Equal(reply, answer(msg)) {
				t.Fatalf("reply %q", reply)
			}
			if tc.state == stReqAck {
				if got := h.receivedFrom(dead); len(got) != 0 {
					t.Fatal("the dead sender's partial message was delivered")
				}
			}
		})
	}
}

// forge writes chunks into a slot directly, as a buggy or hostile process
// could.
type forged struct {
	data  []byte
	n     uint32
	total uint64
	flags uint32
	flip  uint32 // bits flipped in the honest checksum
}

func chunk(data []byte, total int, flags uint32) forged {
	return forged{data: data, n: uint32(len(data)), total: uint64(total), flags: flags}
}

func (c forged) with(f func(*forged)) forged { f(&c); return c }

func (c forged) crc(seq uint32) uint32 { return chunkCRC(seq, c.n, c.flags, c.total, c.data) ^ c.flip }

func (h *harness) forgeClaim(i, pid int) claim {
	h.t.Helper()
	state := h.r.slotState(i)
	v := atomic.LoadUint64(state)
	_, seq, st := parts(v)
	if st != stFree {
		h.t.Fatalf("slot %d is in state %d", i, st)
	}
	c := claim{i: i, pid: uint32(pid), seq: (seq + 1) & seqMask}
	if !atomic.CompareAndSwapUint64(state, v, c.at(stWriting)) {
		h.t.Fatal("lost the race for a slot")
	}
	return c
}

// forgePost posts c in slot i and returns the state the primary moves the
// slot to.
func (h *harness) forgePost(cl claim, from uint32, c forged) (newSeq, st uint32) {
	h.t.Helper()
	r := h.r
	i, seq := cl.i, cl.seq
	copy(r.slotData(i), c.data)
	atomic.StoreUint64(r.slotU64(i, offTotal), c.total)
	atomic.StoreUint32(r.slotU32(i, offN), c.n)
	atomic.StoreUint32(r.slotU32(i, offCRC), c.crc(seq))
	atomic.StoreUint32(r.slotU32(i, offFlags), c.flags)
	state := r.slotState(i)
	if !atomic.CompareAndSwapUint64(state, cl.at(from), cl.at(stReq)) {
		h.t.Fatal("the forged slot moved")
	}
	atomic.AddUint32(r.BellWord(), 1)
	h.primary.Ring()
	deadline := time.Now().Add(testDeadline)
	for {
		v := atomic.LoadUint64(state)
		if v != cl.at(stReq) {
			_, seq, st := parts(v)
			return seq, st
		}
		if time.Now().After(deadline) {
			h.t.Fatal("the primary never took the forged chunk")
		}
		h.slots[i].Wait(uint32(v), 10*time.Millisecond)
	}
}

func TestPollRefusesCorruptChunks(t *testing.T) {
	t.Parallel()
	const max = 4096
	d := MinSlotData
	hello := []byte("hello")
	full := randomBytes(6, d)
	both := flagFirst | flagLast
	for _, tc := range []struct {
		name   string
		chunks []forged // all but the last are honest
		end    uint32   // the state the last leaves the slot in (0: free)
	}{
		{"bad checksum", []forged{chunk(hello, 5, both).with(func(c *forged) { c.flip ^= 1 })}, 0},
		{"N past the data area", []forged{chunk(full, 1000, flagFirst).with(func(c *forged) { c.n = uint32(d + 1) })}, 0},
		{"N of 2^32-1", []forged{chunk(full, 1000, flagFirst).with(func(c *forged) { c.n = ^uint32(0) })}, 0},
		{"N past the total", []forged{chunk(hello, 4, both)}, 0},
		{"total over the limit", []forged{chunk(full, max+1, flagFirst)}, stTooLarge},
		{"total of 2^64-1", []forged{chunk(full, 0, flagFirst).with(func(c *forged) { c.total = ^uint64(0) })}, stTooLarge},
		{"last chunk short of the total", []forged{chunk(hello, 10, both)}, 0},
		{"empty chunk not last", []forged{chunk(nil, 10, flagFirst)}, 0},
		{"continuation without a first chunk", []forged{chunk(hello, 5, flagLast)}, 0},
		{"second chunk with a bad checksum", []forged{
			chunk(full, d+5, flagFirst),
			chunk(hello, 0, flagLast).with(func(c *forged) { c.flip ^= 0x80000000 }),
		}, 0},
		{"second chunk past the total", []forged{
			chunk(full, d+4, flagFirst),
			chunk(hello, 0, flagLast),
		}, 0},
		{"second chunk N past the data area", []forged{
			chunk(full, 3*d, flagFirst),
			chunk(full, 0, 0).with(func(c *forged) { c.n = uint32(d + 64) }),
		}, 0},
		{"message ends early", []forged{
			chunk(full, 3*d, flagFirst),
			chunk(full, 0, flagLast),
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, Layout{Slots: 1, SlotData: d}, max, alive)
			h.serve()
			cl := h.forgeClaim(0, 4242)
			from := stWriting
			for k, c := range tc.chunks {
				newSeq, st := h.forgePost(cl, from, c)
				if newSeq != cl.seq {
					t.Fatalf("chunk %d: the slot's sequence moved from %d to %d", k, cl.seq, newSeq)
				}
				want := stReqAck
				if k == len(tc.chunks)-1 {
					want = tc.end
				}
				if st != want {
					t.Fatalf("chunk %d: the primary moved the slot to state %d, want %d", k, st, want)
				}
				if st == stTooLarge {
					atomic.CompareAndSwapUint64(h.r.slotState(0), cl.at(st), mk(0, cl.seq, stFree)) // as the sender does
				}
				from = stReqAck
			}
			h.locked(func() {
				if h.refused != 1 {
					t.Errorf("Poll refused %d chunks, want 1", h.refused)
				}
				if len(h.received) != 0 {
					t.Errorf("the primary delivered a corrupt message of %d bytes", len(h.received[0].Data))
				}
			})
			// The receiver keeps serving honest senders, in that slot.
			msg := randomBytes(7, 2*d+1)
			reply, err := h.sender(1).Send(msg, time.Now().Add(testDeadline))
			if err != nil || !bytes.Equal(reply, answer(msg)) {
				t.Fatalf("honest Send after a corrupt one: %d bytes, %v", len(reply), err)
			}
			if got := h.receivedFrom(1); len(got) != 1 || !bytes.Equal(got[0], msg) {
				t.Fatal("the honest message did not arrive intact")
			}
		})
	}
}

func TestSendOverReceiverLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, small, 1000, alive)
	h.serve()
	_, err := h.sender(1).Send(make([]byte, 1001), time.Now().Add(testDeadline))
	if err == nil {
		t.Fatal("a message over the primary's limit was accepted")
	}
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Send over the limit: %v", err)
	}
	h.locked(func() {
		if len(h.received) != 0 || h.refused == 0 {
			t.Fatalf("received %d, refused %d", len(h.received), h.refused)
		}
	})
	if reply, err := h.sender(1).Send(make([]byte, 1000), time.Now().Add(testDeadline)); err != nil || len(reply) != 2006 {
		t.Fatalf("Send at the limit: %d bytes, %v", len(reply), err)
	}
	h.allFree(t)
}

func TestSendReplyOverMaxReply(t *testing.T) {
	t.Parallel()
	h := newHarness(t, small, 1<<16, alive)
	h.serve()
	s := h.sender(1)
	s.MaxReply = 100
	if reply, err := s.Send(make([]byte, 47), time.Now().Add(testDeadline)); err != nil || len(reply) != 100 {
		t.Fatalf("reply at the limit: %d bytes, %v", len(reply), err)
	}
	if _, err := s.Send(make([]byte, 48), time.Now().Add(testDeadline)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("reply over the limit: %v, want ErrTooLarge", err)
	}
	h.allFree(t)
	if _, err := s.Send(make([]byte, 1), time.Now().Add(testDeadline)); err != nil {
		t.Fatalf("Send after a refused reply: %v", err)
	}
}

func TestReplyTwice(t *testing.T) {
	t.Parallel()
	h := newHarness(t, small, 1<<16, alive)
	h.respond = func(Incoming) ([]byte, bool) { return nil, false }
	h.serve()
	c := sendAsync(h.sender(1), []byte("question"))
	var in Incoming
	eventually(t, "the message to arrive", func() bool {
		h.locked(func() {
			if len(h.held) > 0 {
				in = h.held[0]
			}
		})
		return in.Data != nil
	})
	long := randomBytes(11, 5*small.SlotData)
	h.locked(func() {
		if err := h.rc.Reply(in, long); err != nil {
			t.Fatalf("Reply: %v", err)
		}
		if err := h.rc.Reply(in, []byte("again")); !errors.Is(err, ErrLost) {
			t.Errorf("second Reply to one message: %v, want ErrLost", err)
		}
	})
	if r := wait(t, c); r.err != nil || !bytes.Equal(r.reply, long) {
		t.Fatalf("Send: %d bytes, %v; want the first reply, whole", len(r.reply), r.err)
	}
}

// forgeReply answers in with chunks written directly into the region, as a
// buggy primary could.
func (h *harness) forgeReply(in Incoming, chunks []forged) {
	h.t.Helper()
	i, r := in.Slot, h.r
	cl := claim{i: i, pid: uint32(in.PID), seq: in.seq}
	state := r.slotState(i)
	from := stWaiting
	for k, c := range chunks {
		copy(r.slotData(i), c.data)
		atomic.StoreUint64(r.slotU64(i, offTotal), c.total)
		atomic.StoreUint32(r.slotU32(i, offN), c.n)
		atomic.StoreUint32(r.slotU32(i, offCRC), c.crc(in.seq))
		atomic.StoreUint32(r.slotU32(i, offFlags), c.flags)
		if !atomic.CompareAndSwapUint64(state, cl.at(from), cl.at(stRep)) {
			h.t.Fatalf("reply chunk %d: the slot moved", k)
		}
		h.slots[i].Ring()
		if k == len(chunks)-1 {
			return
		}
		deadline := time.Now().Add(testDeadline)
		for v := atomic.LoadUint64(state); v == cl.at(stRep); v = atomic.LoadUint64(state) {
			if time.Now().After(deadline) {
				h.t.Fatal("the sender never took the reply chunk")
			}
			h.primary.Wait(atomic.LoadUint32(r.BellWord()), 10*time.Millisecond)
		}
		if _, _, st := parts(atomic.LoadUint64(state)); st != stRepAck {
			h.t.Fatalf("reply chunk %d: the sender moved the slot to state %d", k, st)
		}
		from = stRepAck
	}
}

func TestSenderRefusesCorruptReply(t *testing.T) {
	t.Parallel()
	d := MinSlotData
	full := randomBytes(12, d)
	hello := []byte("hello")
	both := flagFirst | flagLast
	for _, tc := range []struct {
		name   string
		chunks []forged
		want   error
	}{
		{"bad checksum", []forged{chunk(hello, 5, both).with(func(c *forged) { c.flip ^= 1 })}, ErrMalformed},
		{"N past the data area", []forged{chunk(full, 1000, flagFirst).with(func(c *forged) { c.n = uint32(d + 1) })}, ErrMalformed},
		{"N of 2^32-1", []forged{chunk(full, 1000, flagFirst).with(func(c *forged) { c.n = ^uint32(0) })}, ErrMalformed},
		{"N past the total", []forged{chunk(hello, 4, both)}, ErrMalformed},
		{"total over MaxReply", []forged{chunk(full, 1<<20+1, flagFirst)}, ErrTooLarge},
		{"total of 2^64-1", []forged{chunk(full, 0, flagFirst).with(func(c *forged) { c.total = ^uint64(0) })}, ErrTooLarge},
		{"last chunk short of the total", []forged{chunk(hello, 10, both)}, ErrMalformed},
		{"no first chunk", []forged{chunk(hello, 5, flagLast)}, ErrMalformed},
		{"second chunk with a bad checksum", []forged{
			chunk(full, d+5, flagFirst),
			chunk(hello, 0, flagLast).with(func(c *forged) { c.flip ^= 0x80000000 }),
		}, ErrMalformed},
		{"second chunk past the total", []forged{chunk(full, d+4, flagFirst), chunk(hello, 0, flagLast)}, ErrMalformed},
		{"reply ends early", []forged{chunk(full, 3*d, flagFirst), chunk(full, 0, flagLast)}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, Layout{Slots: 1, SlotData: d}, 1<<16, alive)
			h.respond = func(Incoming) ([]byte, bool) { return nil, false }
			h.serve()
			c := sendAsync(h.sender(1), []byte("question"))
			var in Incoming
			eventually(t, "the message to arrive", func() bool {
				h.locked(func() {
					if len(h.held) > 0 {
						in = h.held[0]
					}
				})
				return in.Data != nil
			})
			h.forgeReply(in, tc.chunks)
			r := wait(t, c)
			if !errors.Is(r.err, tc.want) {
				t.Fatalf("Send: %d bytes, %v, want %v", len(r.reply), r.err, tc.want)
			}
			if _, st := h.slotState(0); st != stFree {
				t.Fatalf("the sender left the slot in state %d", st)
			}
		})
	}
}

// reinit lays out generation gen+1 over h's memory, as a new primary does,
// and returns that primary's side. It shares h's doorbells, which ring the
// same words.
func (h *harness) reinit(max int) *harness {
	h.t.Helper()
	r, err := Init(h.r.b, h.r.layout, Owner{PID: 2, Start: 2}, h.r.gen+1, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	n := &harness{t: h.t, r: r, primary: h.primary, slots: h.slots}
	n.rc = NewReceiver(r, max, func(i int) { n.slots[i].Ring() }, alive)
	n.respond = func(in Incoming) ([]byte, bool) { return answer(in.Data), true }
	return n
}

func TestSendRegionGone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		kill func(h *harness)
		bump uint32 // Init frees every slot under a new sequence number
	}{
		{"closed", func(h *harness) { h.r.Close() }, 0},
		{"re-initialised", func(h *harness) { h.reinit(1 << 16) }, 1},
	} {
		t.Run(tc.name+" while waiting for the reply", func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, Layout{Slots: 2, SlotData: MinSlotData}, 1<<16, alive)
			h.respond = func(Incoming) ([]byte, bool) { return nil, false }
			c := sendAsync(h.sender(1), []byte("anyone?"))
			eventually(t, "the message to arrive", func() bool {
				h.poll()
				return len(h.receivedFrom(1)) == 1
			})
			var seqs []uint32
			for i := range 2 {
				seq, _ := h.slotState(i)
				seqs = append(seqs, seq)
			}
			tc.kill(h)
			if r := wait(t, c); !errors.Is(r.err, ErrLost) {
				t.Fatalf("Send: %q, %v, want ErrLost", r.reply, r.err)
			}
			for i := range 2 {
				if seq, _ := h.slotState(i); seq != seqs[i]+tc.bump {
					t.Errorf("slot %d: sequence %d became %d, want %d", i, seqs[i], seq, seqs[i]+tc.bump)
				}
			}
		})
	}
	t.Run("closed while waiting for a slot", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
		h.respond = func(Incoming) ([]byte, bool) { return nil, false }
		first := sendAsync(h.sender(1), []byte("first"))
		eventually(t, "the first message to arrive", func() bool {
			h.poll()
			return len(h.receivedFrom(1)) == 1
		})
		second := h.sender(2)
		waiting := make(chan struct{})
		var once sync.Once
		second.Check = func() error { once.Do(func() { close(waiting) }); return nil }
		c := sendAsync(second, []byte("second"))
		<-waiting // the second sender found no free slot
		h.r.Close()
		for _, c := range []<-chan result{first, c} {
			if r := wait(t, c); !errors.Is(r.err, ErrLost) {
				t.Fatalf("Send: %q, %v, want ErrLost", r.reply, r.err)
			}
		}
		if got := h.receivedFrom(2); len(got) != 0 {
			t.Fatal("a message was delivered to a closed region")
		}
	})
}

// TestSendAcrossReinit: a sender waits for a slot while the primary is
// replaced and the region laid out again. If it then reports its message
// lost, the new primary must not have it: a lost message is sent again.
func TestSendAcrossReinit(t *testing.T) {
	t.Parallel()
	old := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
	old.respond = func(Incoming) ([]byte, bool) { return nil, false }
	first := sendAsync(old.sender(1), []byte("first"))
	eventually(t, "the first message to arrive", func() bool {
		old.poll()
		return len(old.receivedFrom(1)) == 1
	})

	var next *harness
	inClaim, reinitDone := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s := old.sender(2) // attached to the old generation
	s.Check = func() error {
		once.Do(func() {
			close(inClaim) // no free slot: it is in its claim loop
			<-reinitDone
		})
		return nil
	}
	// The new primary takes whatever is rung at once, and answers nothing
	// for now: a handler that takes its time.
	s.Primary = &hookBell{Bell: old.primary, hook: func(int) { next.poll() }}
	c := sendAsync(s, []byte("second"))
	<-inClaim
	next = old.reinit(1 << 16)
	next.respond = func(Incoming) ([]byte, bool) { return nil, false }
	close(reinitDone)

	if r := wait(t, first); !errors.Is(r.err, ErrLost) {
		t.Errorf("the sender whose slot was cleared: %q, %v, want ErrLost", r.reply, r.err)
	}
	r := wait(t, c)
	delivered := next.receivedFrom(2)
	if errors.Is(r.err, ErrLost) && len(delivered) > 0 {
		t.Fatalf("Send reported ErrLost (not delivered, send again), but the new primary received %q", delivered[0])
	}
}

// TestReplyBeforeSenderSeesAck: the primary can take the last chunk and
// answer it before the sender looks at its slot again (the sender is
// preempted after ringing, or the primary simply answers at once). The
// sender must then take the reply; it must not report the message lost,
// since a lost message is sent again.
func TestReplyBeforeSenderSeesAck(t *testing.T) {
	t.Parallel()
	for _, size := range []int{5, 3*MinSlotData + 1} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, small, 1<<16, alive)
			s := h.sender(1)
			// Each time the sender rings, the primary runs before the
			// sender does again.
			s.Primary = &hookBell{Bell: h.primary, hook: func(int) { h.poll() }}
			msg := randomBytes(8, size)
			reply, err := s.Send(msg, time.Now().Add(testDeadline))
			if err != nil {
				t.Fatalf("Send: %v; the primary received the message %d times and answered it", err, len(h.receivedFrom(1)))
			}
			if !bytes.Equal(reply, answer(msg)) {
				t.Fatal("wrong reply")
			}
		})
	}
}

func TestRegionInitAttach(t *testing.T) {
	t.Parallel()
	l := Layout{Slots: 3, SlotData: 512}
	b := alignedBytes(l.Size())
	if _, ok := PreviousGeneration(b); ok {
		t.Fatal("PreviousGeneration found a region in zeroes")
	}
	if _, err := Attach(b); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Attach of zeroes: %v, want ErrNotReady", err)
	}
	owner := Owner{PID: 77, Start: 1234567}
	r, err := Init(b, l, owner, 41, 2)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := PreviousGeneration(b); !ok || g != 41 {
		t.Fatalf("PreviousGeneration = %d, %v", g, ok)
	}
	a, err := Attach(b)
	if err != nil {
		t.Fatal(err)
	}
	if a.Layout() != l || a.Generation() != 41 || a.Owner() != owner || a.BellKind() != 2 || !a.HeaderIntact() || !a.Current() {
		t.Fatalf("Attach: layout %+v, generation %d, owner %+v, bell kind %d", a.Layout(), a.Generation(), a.Owner(), a.BellKind())
	}
	if _, err := Attach(b[:len(b)-8]); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Attach of a short mapping: %v", err)
	}
	if _, err := Attach(alignedBytes(l.Size() + 9)[1:]); err == nil {
		t.Fatal("Attach accepted unaligned memory")
	}
	v := *r.u32(offVersion)
	*r.u32(offVersion) = v + 1
	if _, err := Attach(b); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("Attach of another version: %v, want ErrIncompatible", err)
	}
	*r.u32(offVersion) = v
	r.Close()
	if r.Current() || a.Current() {
		t.Fatal("a closed region is current")
	}
	if _, err := Attach(b); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Attach of a closed region: %v, want ErrNotReady", err)
	}
	if _, err := Init(b, l, owner, 42, 2); err != nil {
		t.Fatal(err)
	}
	if a.Current() {
		t.Fatal("a view of generation 41 is current after generation 42 was laid out")
	}

	if BellWordOf(b) != a.BellWord() {
		t.Error("BellWordOf is not the region's doorbell word")
	}
	*r.u64(offMagic) = 0 // a damaged header still has its doorbell
	if _, err := Attach(b); err == nil || BellWordOf(b) != a.BellWord() {
		t.Errorf("damaged header: Attach %v, BellWordOf %p", err, BellWordOf(b))
	}
	if BellWordOf(b[:HeaderSize-1]) != nil || BellWordOf(alignedBytes(HeaderSize + 1)[1:]) != nil {
		t.Error("BellWordOf of a short or misaligned region is not nil")
	}

	for _, bad := range []Layout{{0, 256}, {MaxSlots + 1, 256}, {1, 255}, {1, 320 - 1}, {1, MinSlotData - 64}, {1, MaxSlotData + 64}} {
		if _, err := Init(alignedBytes(HeaderSize+64), bad, owner, 1, 0); err == nil {
			t.Errorf("Init accepted layout %+v", bad)
		}
	}
	if _, err := Init(alignedBytes(l.Size()+8), l, owner, 1, 0); err == nil {
		t.Error("Init accepted a region of the wrong size")
	}
	if _, err := Init(alignedBytes(l.Size() + 1)[1:], l, owner, 1, 0); err == nil {
		t.Error("Init accepted unaligned memory")
	}
}

// TestReplySurvivesReinit: the primary answers and leaves before the
// sender reads the answer, and the next primary lays the region out again.
// The sender must still take the answer: a slot freed by the new layout
// would make it send the message again, to the next primary, which would
// handle it a second time.
func TestReplySurvivesReinit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, small, 1<<16, alive)
	s := h.sender(1)
	var next *harness
	s.Primary = &hookBell{Bell: h.primary, hook: func(int) {
		h.poll()
		h.r.Close()
		next = h.reinit(1 << 16)
	}}
	sendAnswered(t, s)
	next.allFree(t)
}

// TestReplyBeforeCheckFails: the sender's periodic check finds the primary
// gone (its lock free), but the primary answered just before it left. The
// answer stands.
func TestReplyBeforeCheckFails(t *testing.T) {
	t.Parallel()
	h := newHarness(t, small, 1<<16, alive)
	s := h.sender(1)
	s.Check = func() error {
		h.poll() // the primary answers, then exits
		return errors.New("primary gone")
	}
	sendAnswered(t, s)
}

// sendAnswered sends a message through s, whose primary answers it and
// leaves, and wants that answer.
func sendAnswered(t *testing.T, s *Sender) {
	t.Helper()
	msg := []byte("open this")
	reply, err := s.Send(msg, time.Now().Add(testDeadline))
	if err != nil {
		t.Fatalf("Send: %v, want the reply written before the primary left", err)
	}
	if !bytes.Equal(reply, answer(msg)) {
		t.Fatal("wrong reply")
	}
}

// scribble does what a sender does to post a chunk of claim cl: it writes
// the chunk into the slot, then moves the slot from state from to req, and
// reports whether that move succeeded. Called for a sender that was
// preempted after it saw its slot in state from, it plays that sender's
// late writes: they land in the slot, whoever holds it by then.
func (h *harness) scribble(cl claim, from uint32, c forged) bool {
	r, i := h.r, cl.i
	copy(r.slotData(i), c.data)
	if c.flags&flagFirst != 0 {
		atomic.StoreUint64(r.slotU64(i, offTotal), c.total)
	}
	atomic.StoreUint32(r.slotU32(i, offN), c.n)
	atomic.StoreUint32(r.slotU32(i, offCRC), c.crc(cl.seq))
	atomic.StoreUint32(r.slotU32(i, offFlags), c.flags)
	return atomic.CompareAndSwapUint64(r.slotState(i), cl.at(from), cl.at(stReq))
}

// staleHolds are the moments at which a sender can hold a slot while it
// still has to touch the slot's data: to write its first chunk, to write
// its next chunk, or to read the next chunk of its reply. Each hold makes
// pid's sender take the only slot of h and stop there; resume lets it go
// on and returns the error its Send returns.
var staleHolds = []struct {
	name string
	hold func(t *testing.T, h *harness, pid int) (resume func() error)
}{
	{"claimed, first chunk unwritten", func(t *testing.T, h *harness, pid int) func() error {
		s := h.sender(pid)
		claimed, resume := make(chan struct{}), make(chan struct{})
		// Between its claim and its first write a sender opens its slot's
		// doorbell: it can be preempted there.
		s.Slot = func(i int) (Bell, error) {
			close(claimed)
			<-resume
			return h.slots[i], nil
		}
		c := sendAsync(s, []byte("stale message"))
		<-claimed
		return sync.OnceValue(func() error {
			close(resume)
			return wait(t, c).err
		})
	}},
	{"acknowledged, next chunk unwritten", func(t *testing.T, h *harness, pid int) func() error {
		// The sender saw its first chunk acknowledged; it has still to copy
		// the second (written by hand: no hook stops a Sender there).
		msg := randomBytes(20, 2*MinSlotData)
		cl := h.forgeClaim(0, pid)
		if !h.scribble(cl, stWriting, chunk(msg[:MinSlotData], len(msg), flagFirst)) {
			t.Fatal("the forged slot moved")
		}
		h.poll()
		if v := atomic.LoadUint64(h.r.slotState(0)); v != cl.at(stReqAck) {
			_, _, st := parts(v)
			t.Fatalf("the first chunk left the slot in state %d, want %d", st, stReqAck)
		}
		return sync.OnceValue(func() error {
			if h.scribble(cl, stReqAck, chunk(msg[MinSlotData:], 0, flagLast)) {
				return nil
			}
			h.sender(pid).abandon(cl) // as Send does when its exchange fails
			return ErrLost
		})
	}},
	{"reply partly sent, chunk unread", func(t *testing.T, h *harness, pid int) func() error {
		h.respond = func(in Incoming) ([]byte, bool) { return randomBytes(21, 2*MinSlotData), true }
		s := h.sender(pid)
		stopped, resume := make(chan struct{}), make(chan struct{})
		// The primary takes the message and sends the first chunk of its
		// reply; the sender stops before it reads it.
		s.Primary = &hookBell{Bell: h.primary, hook: func(int) {
			h.poll()
			close(stopped)
			<-resume
		}}
		c := sendAsync(s, []byte("stale message"))
		<-stopped
		if _, st := h.slotState(0); st != stRep {
			t.Fatalf("the reply's first chunk left the slot in state %d, want %d", st, stRep)
		}
		return sync.OnceValue(func() error {
			close(resume)
			return wait(t, c).err
		})
	}},
}

// TestStaleSenderAfterReinit: a sender of the old generation holds a slot
// and has yet to touch its data when a new primary lays the region out
// again. The slot must not go to another sender before the stale one lets
// go: its late writes would land on that sender's message or reply (the
// checksum would catch them, but the reply would be lost), its late reads
// would meet that sender's bytes. The stale sender then finds its message
// lost and frees the slot. A second new primary before it resumes changes
// nothing.
func TestStaleSenderAfterReinit(t *testing.T) {
	t.Parallel()
	const stale, fresh = 10, 20
	for _, tc := range staleHolds {
		for _, handovers := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s, %d handovers", tc.name, handovers), func(t *testing.T) {
				t.Parallel()
				old := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
				resume := tc.hold(t, old, stale)
				next := old
				for range handovers {
					next = next.reinit(1 << 16)
				}

				var staleErr error
				released := false
				release := func() {
					if !released {
						released = true
						staleErr = resume()
					}
				}
				s := next.sender(fresh)
				// Finding no free slot, the fresh sender checks its
				// primary: the stale sender resumes meanwhile.
				s.Check = func() error { release(); return nil }
				// Given a slot, the fresh sender posts its message and the
				// new primary answers it at once; the stale sender resumes
				// before the fresh one reads the answer.
				s.Primary = &hookBell{Bell: next.primary, hook: func(int) {
					if !released {
						t.Error("a fresh sender was given the slot that a stale sender still held")
					}
					next.poll()
					release()
				}}
				msg := []byte("fresh message")
				reply, err := s.Send(msg, time.Now().Add(testDeadline))
				if err != nil || !bytes.Equal(reply, answer(msg)) {
					t.Fatalf("the fresh sender got %q, %v, want its answer", reply, err)
				}
				if !errors.Is(staleErr, ErrLost) {
					t.Errorf("the stale sender: %v, want ErrLost", staleErr)
				}
				if got := next.receivedFrom(stale); len(got) != 0 {
					t.Errorf("the new primary received %q from the stale sender", got[0])
				}
				if got := next.receivedFrom(fresh); len(got) != 1 {
					t.Errorf("the new primary received %d messages from the fresh sender, want 1", len(got))
				}
				next.allFree(t)
			})
		}
	}
}

// TestRevokedSlotOfDeadSender: a sender of the old generation dies holding
// a slot whose data it had still to touch when a new primary laid the
// region out again. The slot stays out of use while its claimant may live,
// and is freed once the claimant is known dead: by the primary, once the
// slot has stood still long enough, or by a sender that finds no free
// slot.
func TestRevokedSlotOfDeadSender(t *testing.T) {
	t.Parallel()
	const dead = 666
	isAlive := func(pid int) bool { return pid != dead }
	for _, tc := range staleHolds {
		for _, by := range []string{"primary", "sender"} {
			t.Run(tc.name+", freed by the "+by, func(t *testing.T) {
				t.Parallel()
				old := newHarness(t, Layout{Slots: 1, SlotData: MinSlotData}, 1<<16, alive)
				resume := tc.hold(t, old, dead)
				t.Cleanup(func() { resume() }) // killed: it never resumes while the test runs
				next := old.reinit(1 << 16)

				errNoSlot := errors.New("no free slot")
				early := next.sender(2)
				early.Check = func() error { return errNoSlot }
				early.Primary = &hookBell{Bell: next.primary, hook: func(int) {
					t.Error("a sender was given the slot of a claimant that may be alive")
				}}
				if _, err := early.Send([]byte("early"), time.Now().Add(testDeadline)); !errors.Is(err, errNoSlot) {
					t.Fatalf("Send while the only slot is held: %v, want %v", err, errNoSlot)
				}

				s := next.sender(3)
				if by == "primary" {
					next.rc.alive = isAlive
				} else {
					s.Alive = isAlive
				}
				next.serve()
				msg := []byte("after the dead sender")
				reply, err := s.Send(msg, time.Now().Add(testDeadline))
				if err != nil || !bytes.Equal(reply, answer(msg)) {
					t.Fatalf("Send: %q, %v, want its answer", reply, err)
				}
				if got := next.receivedFrom(dead); len(got) != 0 {
					t.Errorf("the new primary received %q from the dead sender", got[0])
				}
				next.allFree(t)
			})
		}
	}
}

// TestInitSlots: a new layout frees the slots that wait on the old primary,
// revokes those whose sender may still touch their data, keeps a whole
// reply and the slots already revoked, and frees a slot without a
// claimant's PID (damage: every claim carries one).
func TestInitSlots(t *testing.T) {
	t.Parallel()
	type slot struct{ pid, seq, st uint32 }
	freed := slot{0, 8, stFree}
	for _, tc := range []struct {
		before slot
		flags  uint32 // of the chunk in the slot
		after  slot
	}{
		{slot{0, 7, stFree}, 0, freed},
		{slot{5, 7, stWriting}, 0, slot{5, 7, stRevoked}},
		{slot{5, 7, stReq}, flagFirst, freed},
		{slot{5, 7, stReqAck}, flagFirst, slot{5, 7, stRevoked}},
		{slot{5, 7, stWaiting}, flagLast, freed},
		{slot{5, 7, stReplying}, 0, freed},
		{slot{5, 7, stRep}, flagFirst, slot{5, 7, stRevoked}},
		{slot{5, 7, stRep}, flagFirst | flagLast, slot{5, 7, stRep}},
		{slot{5, 7, stRep}, flagLast, slot{5, 7, stRep}},
		{slot{5, 7, stRepAck}, flagFirst, freed},
		{slot{5, 7, stTooLarge}, flagFirst, freed},
		{slot{5, 7, stRevoked}, 0, slot{5, 7, stRevoked}},
		{slot{5, 7, stateMask}, 0, freed},
		{slot{0, 7, stWriting}, 0, freed},
		{slot{0, 7, stRevoked}, 0, freed},
		{slot{0, 7, stRep}, flagFirst | flagLast, freed},
	} {
		l := Layout{Slots: 1, SlotData: MinSlotData}
		b := alignedBytes(l.Size())
		r, err := Init(b, l, Owner{PID: 1, Start: 1}, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		in := tc.before
		atomic.StoreUint64(r.slotState(0), mk(in.pid, in.seq, in.st))
		atomic.StoreUint32(r.slotU32(0, offFlags), tc.flags)
		if r, err = Init(b, l, Owner{PID: 2, Start: 2}, 2, 0); err != nil {
			t.Fatal(err)
		}
		var got slot
		got.pid, got.seq, got.st = parts(atomic.LoadUint64(r.slotState(0)))
		if got != tc.after {
			t.Errorf("slot %+v, flags %d: Init left %+v, want %+v", in, tc.flags, got, tc.after)
		}
	}
}

// A chunk's checksum is CRC-32C of its metadata (sequence, length, flags,
// total, little-endian) followed by its data: peers of other builds
// compute it so. Large chunks are checked often enough to take both of
// chunkCRC's ways.
func TestChunkCRCIsCRC32C(t *testing.T) {
	for _, c := range []struct {
		seq, n, flags uint32
		total         uint64
		data          []byte
	}{
		{1, 3, flagFirst, 1 << 40, []byte("abc")},
		{seqMask + 5, 0, 0, 99, nil}, // total counts only in a first chunk
		{7, 200, flagFirst | flagLast, 200, bytes.Repeat([]byte{0xa5}, 200)},
		{8, bulkCRC + 3, flagFirst, 1 << 20, bytes.Repeat([]byte{0x5a, 3, 7}, bulkCRC/3+1)},
	} {
		total := c.total
		if c.flags&flagFirst == 0 {
			total = 0
		}
		b := binary.LittleEndian.AppendUint32(nil, c.seq&seqMask)
		b = binary.LittleEndian.AppendUint32(b, c.n)
		b = binary.LittleEndian.AppendUint32(b, c.flags)
		b = binary.LittleEndian.AppendUint64(b, total)
		want := crc32.Checksum(append(b, c.data...), crc32.MakeTable(crc32.Castagnoli))
		for range hwAfter + 2 {
			if got := chunkCRC(c.seq, c.n, c.flags, c.total, c.data); got != want {
				t.Fatalf("chunkCRC(%d, %d, %#x, %d, %d bytes) = %#x, want %#x", c.seq, c.n, c.flags, c.total, len(c.data), got, want)
			}
		}
	}
}

func BenchmarkChunkCRC(b *testing.B) {
	for _, n := range []int{200, bulkCRC - 1, bulkCRC, 16 << 10} {
		data := make([]byte, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				chunkCRC(1, uint32(n), flagFirst, uint64(n), data)
			}
		})
	}
}

// A sender whose Check says that the primary is gone (its caller took the
// lock, and will reset the region) leaves its slot as it is, even one that
// the dead primary was replying into, rather than wait for a reply that
// nobody will finish while its caller holds the lock. Not parallel: it
// sets a hook of the package's.
func TestSenderLeavesSlotOfGonePrimary(t *testing.T) {
	h := newHarness(t, small, 1<<16, alive)
	h.respond = func(Incoming) ([]byte, bool) { return nil, false } // hold it
	var waits atomic.Int32
	testHookAbandonWaits = func() { waits.Add(1) }
	t.Cleanup(func() { testHookAbandonWaits = nil })
	var gone atomic.Bool
	s := h.sender(1001)
	s.Check = func() error {
		if gone.Load() {
			return fmt.Errorf("took the lock: %w", ErrPrimaryGone)
		}
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Send([]byte("to a primary about to die"), time.Now().Add(testDeadline))
		done <- err
	}()
	eventually(t, "the message", func() bool {
		h.poll()
		return len(h.held) == 1
	})
	// The primary dies as it starts to write the reply.
	in := h.held[0]
	state := h.r.slotState(in.Slot)
	v := atomic.LoadUint64(state)
	pid, seq, _ := parts(v)
	if !atomic.CompareAndSwapUint64(state, v, mk(pid, seq, stReplying)) {
		t.Fatal("the slot moved")
	}
	gone.Store(true)
	select {
	case err := <-done:
		if !errors.Is(err, ErrPrimaryGone) {
			t.Errorf("Send: %v, want ErrPrimaryGone", err)
		}
	case <-time.After(2 * testDeadline):
		t.Fatal("Send did not return")
	}
	if n := waits.Load(); n != 0 {
		t.Errorf("the sender waited %d times for the dead primary's reply", n)
	}
	if got := atomic.LoadUint64(state); got != mk(pid, seq, stReplying) {
		t.Errorf("slot state %#x, want it left at %#x", got, mk(pid, seq, stReplying))
	}
}
