package handoff

import (
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"time"
)

// The mailbox: each slot carries one message from a sender to the primary,
// then the primary's reply back, in chunks of the slot's data area. A slot's
// state word holds a 28-bit claim sequence number and a 4-bit state; every
// transition is a compare-and-swap on the whole word, so a stale party (a
// sender that gave up, a primary of an older generation) can never move a
// slot that has since been claimed again.
//
//	free ─claim→ writing ─→ req ⇄ reqAck (more chunks) … req ─last→ waiting
//	waiting ─→ replying ─→ rep ⇄ repAck (more chunks) … rep ─last→ free
//
// The sender owns the data area in writing, reqAck and rep; the primary in
// req, replying and repAck. A sender that dies leaves its slot claimed: the
// slot is reclaimed once its claimant's PID is gone (by a sender that finds
// no free slot, or by the primary when the slot stops moving).
const (
	stFree uint32 = iota
	stWriting
	stReq
	stReqAck
	stWaiting
	stReplying
	stRep
	stRepAck

	stateMask uint32 = 0xf
	seqMask   uint32 = 1<<28 - 1
)

const (
	flagFirst uint32 = 1 << iota
	flagLast
)

func mkword(seq, st uint32) uint32    { return (seq&seqMask)<<4 | st }
func split(w uint32) (seq, st uint32) { return w >> 4, w & stateMask }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CheckEvery is the longest a sender waits between calls to its Check
// function and re-reads of the region's generation.
const CheckEvery = 50 * time.Millisecond

// staleAfter is how long a slot must stand still before the primary asks
// whether its claimant is still alive.
const staleAfter = time.Second

// Bell wakes waiters on one 32-bit word of the region.
type Bell interface {
	// Wait returns when the word may no longer hold old, when the bell
	// rings, or once timeout has passed (a negative timeout: no limit).
	// It may return early; callers re-read the word.
	Wait(old uint32, timeout time.Duration) error
	// Ring wakes the word's waiters.
	Ring() error
}

// Sender sends one message at a time through a region and collects the
// primary's reply.
type Sender struct {
	Region  *Region
	Primary Bell                      // rings the primary
	Slot    func(i int) (Bell, error) // the sender's wake-up for slot i
	Alive   func(pid int) bool        // whether a claimant still runs
	Check   func() error              // called at least every CheckEvery while waiting; an error aborts
	PID     int
	// MaxReply bounds the reply accepted, in bytes.
	MaxReply int
}

// Send delivers msg and returns the primary's reply. ErrLost means the
// message was not delivered (its slot was reclaimed or the region
// re-initialised) and may be sent again.
func (s *Sender) Send(msg []byte, deadline time.Time) ([]byte, error) {
	i, seq, err := s.claim(deadline)
	if err != nil {
		return nil, err
	}
	bell, err := s.Slot(i)
	if err != nil {
		s.abandon(i, seq)
		return nil, err
	}
	reply, err := s.exchange(i, seq, bell, msg, deadline)
	if err != nil {
		s.abandon(i, seq)
	}
	return reply, err
}

func (s *Sender) exchange(i int, seq uint32, bell Bell, msg []byte, deadline time.Time) ([]byte, error) {
	r := s.Region
	word := r.SlotWord(i)
	data := r.slotData(i)
	from := stWriting
	for off := 0; off == 0 || off < len(msg); {
		n := copy(data, msg[off:])
		flags := uint32(0)
		if off == 0 {
			flags |= flagFirst
			atomic.StoreUint64(r.slotU64(i, offTotal), uint64(len(msg)))
		}
		off += n
		want := stReqAck
		if off == len(msg) {
			flags |= flagLast
			want = stWaiting
		}
		atomic.StoreUint32(r.slotU32(i, offN), uint32(n))
		atomic.StoreUint32(r.slotU32(i, offCRC), crc32.Checksum(data[:n], castagnoli))
		atomic.StoreUint32(r.slotU32(i, offFlags), flags)
		if !atomic.CompareAndSwapUint32(word, mkword(seq, from), mkword(seq, stReq)) {
			return nil, ErrLost
		}
		if err := s.ring(); err != nil {
			return nil, err
		}
		w, err := s.await(i, seq, bell, stReq, deadline)
		if err != nil {
			return nil, err
		}
		// The primary may have answered already: rep follows waiting.
		if _, st := split(w); st != want && !(want == stWaiting && st == stRep) {
			return nil, ErrLost
		}
		from = stReqAck
		if n == 0 {
			break
		}
	}

	var reply []byte
	total := -1
	waitingIn := stWaiting
	for {
		w, err := s.await(i, seq, bell, waitingIn, deadline)
		if err != nil {
			return nil, err
		}
		if _, st := split(w); st != stRep {
			return nil, ErrLost
		}
		n := int(atomic.LoadUint32(r.slotU32(i, offN)))
		flags := atomic.LoadUint32(r.slotU32(i, offFlags))
		crc := atomic.LoadUint32(r.slotU32(i, offCRC))
		if flags&flagFirst != 0 {
			t := atomic.LoadUint64(r.slotU64(i, offTotal))
			if t > uint64(s.MaxReply) {
				return nil, fmt.Errorf("%w: reply of %d bytes, limit %d", ErrTooLarge, t, s.MaxReply)
			}
			total = int(t)
			reply = make([]byte, 0, total)
		}
		if total < 0 || n > len(data) || len(reply)+n > total {
			return nil, fmt.Errorf("%w: reply chunk out of bounds", ErrMalformed)
		}
		chunk := append(reply[len(reply):], data[:n]...)
		if crc32.Checksum(chunk, castagnoli) != crc {
			return nil, fmt.Errorf("%w: reply chunk checksum mismatch", ErrMalformed)
		}
		reply = reply[:len(reply)+n]
		if flags&flagLast != 0 {
			if len(reply) != total {
				return nil, fmt.Errorf("%w: reply ended at %d of %d bytes", ErrMalformed, len(reply), total)
			}
			// The reply is whole and its checksum held: it stands even if
			// the slot was reclaimed meanwhile (delivered, so not ErrLost).
			atomic.CompareAndSwapUint32(word, w, mkword(seq, stFree))
			return reply, nil
		}
		if !atomic.CompareAndSwapUint32(word, w, mkword(seq, stRepAck)) {
			return nil, ErrLost
		}
		if err := s.ring(); err != nil {
			return nil, err
		}
		waitingIn = stRepAck
	}
}

func (s *Sender) ring() error {
	atomic.AddUint32(s.Region.BellWord(), 1)
	return s.Primary.Ring()
}

// await waits until slot i leaves state st (and the primary's transient
// replying state) and returns the new word. A word of another claim, or a
// region no longer current, is ErrLost.
func (s *Sender) await(i int, seq uint32, bell Bell, st uint32, deadline time.Time) (uint32, error) {
	word := s.Region.SlotWord(i)
	lastCheck := time.Now()
	for {
		w := atomic.LoadUint32(word)
		wseq, wst := split(w)
		if wseq != seq&seqMask || wst == stFree {
			return w, ErrLost
		}
		if wst != st && wst != stReplying {
			return w, nil
		}
		now := time.Now()
		if !now.Before(deadline) {
			return w, ErrTimeout
		}
		if now.Sub(lastCheck) >= CheckEvery {
			lastCheck = now
			if !s.Region.Current() {
				return w, ErrLost
			}
			if err := s.Check(); err != nil {
				return w, err
			}
		}
		if err := bell.Wait(w, min(deadline.Sub(now), CheckEvery)); err != nil {
			return w, err
		}
	}
}

// claim takes a free slot, or one whose claimant has died.
func (s *Sender) claim(deadline time.Time) (int, uint32, error) {
	r := s.Region
	slots := r.layout.Slots
	start := s.PID % slots
	if start < 0 {
		start = 0
	}
	backoff := time.Millisecond
	for {
		for pass := range 2 {
			for k := range slots {
				i := (start + k) % slots
				w := atomic.LoadUint32(r.SlotWord(i))
				seq, st := split(w)
				switch {
				case st == stFree:
				case pass == 1 && sendersTurn(st):
					// Second pass: reclaim a slot whose claimant is gone.
					pid := int(atomic.LoadUint32(r.slotU32(i, offPID)))
					if pid == 0 || s.Alive(pid) {
						continue
					}
				default:
					continue
				}
				seq = (seq + 1) & seqMask
				if atomic.CompareAndSwapUint32(r.SlotWord(i), w, mkword(seq, stWriting)) {
					atomic.StoreUint32(r.slotU32(i, offPID), uint32(s.PID))
					return i, seq, nil
				}
			}
		}
		// Every slot is busy: more senders than slots. Wait for one to
		// free up, re-checking the primary as in any other wait.
		if !time.Now().Before(deadline) {
			return 0, 0, fmt.Errorf("%w: all %d slots busy", ErrTimeout, slots)
		}
		if !r.Current() {
			return 0, 0, ErrLost
		}
		if err := s.Check(); err != nil {
			return 0, 0, err
		}
		time.Sleep(min(backoff, time.Until(deadline)))
		backoff = min(2*backoff, 20*time.Millisecond)
	}
}

// abandon frees a slot this sender holds, after a failure. A slot the
// primary is writing into is left until it has finished (a bounded copy).
func (s *Sender) abandon(i int, seq uint32) {
	word := s.Region.SlotWord(i)
	for tries := 0; tries < 1000; tries++ {
		w := atomic.LoadUint32(word)
		wseq, st := split(w)
		if wseq != seq&seqMask || st == stFree {
			return
		}
		if st == stReplying {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if atomic.CompareAndSwapUint32(word, w, mkword(seq, stFree)) {
			return
		}
	}
}

// sendersTurn reports whether a slot in state st waits on its sender. Only
// such slots are reclaimed from a claimant that seems dead: every other
// state moves on by the primary's hand and then waits on the sender.
func sendersTurn(st uint32) bool {
	return st == stWriting || st == stReqAck || st == stRep
}

// Incoming is a message the primary has received whole; it is answered with
// Receiver.Reply.
type Incoming struct {
	Slot int
	PID  int
	Data []byte
	seq  uint32
}

// Receiver is the primary's side of the mailbox. It is not safe for
// concurrent use: the caller serialises Poll and Reply.
type Receiver struct {
	r     *Region
	max   int
	wake  func(i int)
	alive func(pid int) bool
	slots []recvSlot
}

type recvSlot struct {
	word  uint32    // last word seen
	since time.Time // when word was first seen
	phase int
	seq   uint32
	total int
	buf   []byte // request so far
	rest  []byte // reply still to send
	first bool
}

const (
	phaseIdle = iota
	phaseReceiving
	phaseWaiting
	phaseReplying
)

// NewReceiver returns the receiving side for r. max bounds a message;
// wake rings slot i's sender; alive tells whether a PID still runs.
func NewReceiver(r *Region, max int, wake func(i int), alive func(pid int) bool) *Receiver {
	return &Receiver{r: r, max: max, wake: wake, alive: alive, slots: make([]recvSlot, r.layout.Slots)}
}

// Poll advances every slot that is waiting on the primary and returns the
// messages completed by this call, and how many chunks it refused as
// malformed. Call it whenever the doorbell rings.
func (rc *Receiver) Poll() (done []Incoming, refused int) {
	now := time.Now()
	for i := range rc.slots {
		ls := &rc.slots[i]
		word := rc.r.SlotWord(i)
		w := atomic.LoadUint32(word)
		seq, st := split(w)
		if ls.phase != phaseIdle && (ls.seq != seq || st == stFree) {
			ls.reset()
		}
		switch st {
		case stReq:
			in, ok := rc.take(i, w)
			if !ok {
				refused++
			} else if in != nil {
				done = append(done, *in)
			}
		case stRepAck:
			if ls.phase == phaseReplying && ls.seq == seq {
				rc.sendChunk(i, stRepAck)
			}
		case stWriting, stReqAck, stRep:
			rc.reapIfDead(i, w, now)
			continue
		}
		ls.word, ls.since = atomic.LoadUint32(word), now
	}
	return done, refused
}

// reapIfDead frees a slot that has not moved for staleAfter and whose
// claimant no longer runs, dropping any partial message.
func (rc *Receiver) reapIfDead(i int, w uint32, now time.Time) {
	ls := &rc.slots[i]
	if ls.word != w {
		ls.word, ls.since = w, now
		return
	}
	if now.Sub(ls.since) < staleAfter {
		return
	}
	ls.since = now
	pid := int(atomic.LoadUint32(rc.r.slotU32(i, offPID)))
	if pid != 0 && !rc.alive(pid) {
		seq, _ := split(w)
		if atomic.CompareAndSwapUint32(rc.r.SlotWord(i), w, mkword(seq, stFree)) {
			ls.reset()
		}
	}
}

// take copies a request chunk out of slot i. ok is false when the chunk was
// refused (and the slot freed, so its sender retries).
func (rc *Receiver) take(i int, w uint32) (in *Incoming, ok bool) {
	r := rc.r
	ls := &rc.slots[i]
	seq, _ := split(w)
	n := int(atomic.LoadUint32(r.slotU32(i, offN)))
	flags := atomic.LoadUint32(r.slotU32(i, offFlags))
	crc := atomic.LoadUint32(r.slotU32(i, offCRC))
	data := r.slotData(i)
	refuse := func() (*Incoming, bool) {
		ls.reset()
		if atomic.CompareAndSwapUint32(r.SlotWord(i), w, mkword(seq, stFree)) {
			rc.wake(i)
		}
		return nil, false
	}
	if flags&flagFirst != 0 {
		total := atomic.LoadUint64(r.slotU64(i, offTotal))
		if total > uint64(rc.max) {
			return refuse()
		}
		ls.reset()
		ls.phase, ls.seq, ls.total = phaseReceiving, seq, int(total)
		ls.buf = make([]byte, 0, min(int(total), 1<<20))
	} else if ls.phase != phaseReceiving || ls.seq != seq {
		return refuse()
	}
	if n > len(data) || len(ls.buf)+n > ls.total {
		return refuse()
	}
	start := len(ls.buf)
	ls.buf = append(ls.buf, data[:n]...)
	if crc32.Checksum(ls.buf[start:], castagnoli) != crc {
		return refuse()
	}
	last := flags&flagLast != 0
	if last && len(ls.buf) != ls.total || !last && n == 0 {
		return refuse()
	}
	next := stReqAck
	if last {
		next = stWaiting
	}
	if !atomic.CompareAndSwapUint32(r.SlotWord(i), w, mkword(seq, next)) {
		ls.reset() // the sender gave up meanwhile
		return nil, true
	}
	rc.wake(i)
	if !last {
		return nil, true
	}
	in = &Incoming{Slot: i, PID: int(atomic.LoadUint32(r.slotU32(i, offPID))), Data: ls.buf, seq: seq}
	ls.buf, ls.phase = nil, phaseWaiting
	return in, true
}

// Reply sends data back to the sender of in. ErrLost means that sender has
// gone (timed out or died) and nobody will read the reply.
func (rc *Receiver) Reply(in Incoming, data []byte) error {
	if in.Slot < 0 || in.Slot >= len(rc.slots) {
		return ErrLost
	}
	ls := &rc.slots[in.Slot]
	if ls.phase != phaseWaiting || ls.seq != in.seq {
		return ErrLost
	}
	ls.phase, ls.rest, ls.first = phaseReplying, data, true
	return rc.sendChunk(in.Slot, stWaiting)
}

func (rc *Receiver) sendChunk(i int, from uint32) error {
	r := rc.r
	ls := &rc.slots[i]
	word := r.SlotWord(i)
	if !atomic.CompareAndSwapUint32(word, mkword(ls.seq, from), mkword(ls.seq, stReplying)) {
		ls.reset()
		return ErrLost
	}
	data := r.slotData(i)
	n := copy(data, ls.rest)
	flags := uint32(0)
	if ls.first {
		flags |= flagFirst
		atomic.StoreUint64(r.slotU64(i, offTotal), uint64(len(ls.rest)))
	}
	ls.rest, ls.first = ls.rest[n:], false
	last := len(ls.rest) == 0
	if last {
		flags |= flagLast
	}
	atomic.StoreUint32(r.slotU32(i, offN), uint32(n))
	atomic.StoreUint32(r.slotU32(i, offCRC), crc32.Checksum(data[:n], castagnoli))
	atomic.StoreUint32(r.slotU32(i, offFlags), flags)
	ok := atomic.CompareAndSwapUint32(word, mkword(ls.seq, stReplying), mkword(ls.seq, stRep))
	rc.wake(i)
	if last || !ok {
		ls.reset()
	}
	if !ok {
		return ErrLost
	}
	return nil
}

func (ls *recvSlot) reset() {
	ls.phase, ls.buf, ls.rest, ls.total, ls.first = phaseIdle, nil, nil, 0, false
}
