package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"time"
)

// The mailbox: each slot carries one message from a sender to the primary,
// then the primary's reply back, in chunks of the slot's data area.
//
// A slot's state is one 64-bit word: the claimant's PID in the high half;
// a 28-bit claim sequence number and a 4-bit state in the low half, on
// which the sender sleeps. Every transition is a compare-and-swap of the
// whole word, so a stale party (a sender that gave up, a primary of an
// older generation) can never move a slot that has since been claimed
// again, and the PID always belongs to the claim it is seen with.
//
//	free ─claim→ writing ─→ req ⇄ reqAck (more chunks) … req ─last→ waiting
//	waiting ─→ replying ─→ rep ⇄ repAck (more chunks) … rep ─last→ free
//	writing, reqAck, rep (not the last chunk) ─new primary→ revoked ─sender→ free
//
// The sender owns the data area in writing, reqAck and rep; the primary in
// req, replying and repAck. A message over the primary's limit goes from
// req to tooLarge, which the sender frees. A sender that dies leaves its
// slot claimed: the slot is taken over once it waits on its sender and the
// claimant's PID is gone (by a sender that finds no free slot, or by the
// primary when the slot stops moving).
//
// A new primary lays the region out again (Init) while senders of the old
// generation may still run. It frees the slots that wait on the old
// primary, whose senders only watch the state word. It cannot free a slot
// whose sender owns the data area: that sender may have been preempted
// just before it copies a chunk in (or out), and its late copy would land
// on the next claimant's message or reply. Init revokes such a slot
// instead, keeping its claim: the sender's next compare-and-swap fails, it
// reports its message lost and frees the slot. Until then no one else
// takes it, unless its claimant is dead, as for the other slots waiting on
// their sender. A whole reply (its last chunk) is left for its sender.
//
// Every chunk carries a CRC-32C of the claim's sequence number, the chunk's
// length, flags and total, and its bytes, computed from the writer's own
// copy of the bytes. A party that writes into a slot it no longer owns (a
// sender wrongly thought dead, a process that scribbles on the region)
// therefore cannot make the owner's chunk pass.
const (
	stFree uint32 = iota
	stWriting
	stReq
	stReqAck
	stWaiting
	stReplying
	stRep
	stRepAck
	stTooLarge
	stRevoked

	stateMask uint32 = 0xf
	seqMask   uint32 = 1<<28 - 1
)

const (
	flagFirst uint32 = 1 << iota
	flagLast
)

func mk(pid, seq, st uint32) uint64 { return uint64(pid)<<32 | uint64((seq&seqMask)<<4|st) }

func parts(v uint64) (pid, seq, st uint32) {
	lo := uint32(v)
	return uint32(v >> 32), lo >> 4, lo & stateMask
}

// claim names one claim of a slot.
type claim struct {
	i        int
	pid, seq uint32
}

func (c claim) at(st uint32) uint64 { return mk(c.pid, c.seq, st) }

// owns reports whether v is a state of claim c, and which.
func (c claim) owns(v uint64) (st uint32, ok bool) {
	pid, seq, st := parts(v)
	return st, pid == c.pid && seq == c.seq&seqMask && st != stFree
}

// castagnoli is CRC-32C by slicing-by-8, with 8 KiB of tables made here
// (about 16 µs): crc32.MakeTable(crc32.Castagnoli) would also make the
// tables of the processor's CRC-32C path, which checksums 1.5 MB to do so,
// about 170 µs of every process's start on the machine of the README's
// figures, where a message is mostly a few hundred bytes. That path is 10
// times as fast, so a process turns to it once it has checksummed hwAfter
// chunks of bulkCRC bytes or more.
var castagnoli = makeSlicing8()

const (
	bulkCRC = 8 << 10
	hwAfter = 16
)

var bulkChunks atomic.Int32

type slicing8 [8][256]uint32

func makeSlicing8() *slicing8 {
	var t slicing8
	for i := range t[0] {
		c := uint32(i)
		for range 8 {
			c = c>>1 ^ crc32.Castagnoli&-(c&1)
		}
		t[0][i] = c
	}
	for i := range t[0] {
		c := t[0][i]
		for k := 1; k < len(t); k++ {
			c = t[0][byte(c)] ^ c>>8
			t[k][i] = c
		}
	}
	return &t
}

// update adds p to the CRC-32C crc.
func (t *slicing8) update(crc uint32, p []byte) uint32 {
	crc = ^crc
	for ; len(p) >= 8; p = p[8:] {
		crc ^= binary.LittleEndian.Uint32(p)
		crc = t[0][p[7]] ^ t[1][p[6]] ^ t[2][p[5]] ^ t[3][p[4]] ^
			t[4][crc>>24] ^ t[5][crc>>16&0xff] ^ t[6][crc>>8&0xff] ^ t[7][crc&0xff]
	}
	for _, b := range p {
		crc = t[0][byte(crc)^b] ^ crc>>8
	}
	return ^crc
}

// chunkCRC checksums a chunk with its metadata and the claim it belongs to;
// total counts only in a first chunk.
func chunkCRC(seq, n, flags uint32, total uint64, data []byte) uint32 {
	if flags&flagFirst == 0 {
		total = 0
	}
	var meta [20]byte
	binary.LittleEndian.PutUint32(meta[0:], seq&seqMask)
	binary.LittleEndian.PutUint32(meta[4:], n)
	binary.LittleEndian.PutUint32(meta[8:], flags)
	binary.LittleEndian.PutUint64(meta[12:], total)
	c := castagnoli.update(0, meta[:])
	if len(data) >= bulkCRC && (bulkChunks.Load() >= hwAfter || bulkChunks.Add(1) > hwAfter) {
		return crc32.Update(c, crc32.MakeTable(crc32.Castagnoli), data)
	}
	return castagnoli.update(c, data)
}

// CheckEvery is the longest a sender waits between calls to its Check
// function and re-reads of the region's generation.
const CheckEvery = 50 * time.Millisecond

// spinFor is how long a sender keeps looking at its slot before it sleeps
// on the bell.
const spinFor = 50 * time.Microsecond

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
	Primary Bell // rings the primary
	// Serving, if set, rings only those of the primary's waiters that
	// handle what they receive (not its receiver, which would only wake
	// to go back to sleep). A sender uses it instead of Primary while the
	// region's ServingWord is not 0, and rings Primary too while it waits
	// past its first check, so that a count that is wrong (damage) delays
	// a message but never loses it.
	Serving Bell
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
	c, err := s.claim(deadline)
	if err != nil {
		return nil, err
	}
	bell, err := s.Slot(c.i)
	if err != nil {
		s.abandon(c)
		return nil, err
	}
	reply, err := s.exchange(c, bell, msg, deadline)
	if err != nil && !errors.Is(err, ErrPrimaryGone) {
		s.abandon(c)
	}
	return reply, err
}

func (s *Sender) exchange(c claim, bell Bell, msg []byte, deadline time.Time) ([]byte, error) {
	r := s.Region
	i := c.i
	state := r.slotState(i)
	data := r.slotData(i)
	from := stWriting
	for off := 0; off == 0 || off < len(msg); {
		n := copy(data, msg[off:])
		src := msg[off : off+n]
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
		atomic.StoreUint32(r.slotU32(i, offCRC), chunkCRC(c.seq, uint32(n), flags, uint64(len(msg)), src))
		atomic.StoreUint32(r.slotU32(i, offFlags), flags)
		if !atomic.CompareAndSwapUint64(state, c.at(from), c.at(stReq)) {
			return nil, ErrLost
		}
		if err := s.ring(); err != nil {
			return nil, err
		}
		st, err := s.await(c, bell, stReq, deadline)
		if err != nil {
			return nil, err
		}
		// The primary may have answered already: rep follows waiting.
		switch {
		case st == stTooLarge:
			atomic.CompareAndSwapUint64(state, c.at(st), mk(0, c.seq, stFree))
			return nil, fmt.Errorf("%w: the primary refused %d bytes", ErrTooLarge, len(msg))
		case st != want && !(want == stWaiting && st == stRep):
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
		st, err := s.await(c, bell, waitingIn, deadline)
		if err != nil {
			return nil, err
		}
		if st != stRep {
			return nil, ErrLost
		}
		n := int(atomic.LoadUint32(r.slotU32(i, offN)))
		flags := atomic.LoadUint32(r.slotU32(i, offFlags))
		crc := atomic.LoadUint32(r.slotU32(i, offCRC))
		var t uint64
		if flags&flagFirst != 0 {
			t = atomic.LoadUint64(r.slotU64(i, offTotal))
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
		if chunkCRC(c.seq, uint32(n), flags, t, chunk) != crc {
			return nil, fmt.Errorf("%w: reply chunk checksum mismatch", ErrMalformed)
		}
		reply = reply[:len(reply)+n]
		if flags&flagLast != 0 {
			if len(reply) != total {
				return nil, fmt.Errorf("%w: reply ended at %d of %d bytes", ErrMalformed, len(reply), total)
			}
			// The reply is whole and its checksum held: it stands even if
			// the slot was taken over meanwhile (delivered, so not ErrLost).
			atomic.CompareAndSwapUint64(state, c.at(stRep), mk(0, c.seq, stFree))
			return reply, nil
		}
		if !atomic.CompareAndSwapUint64(state, c.at(stRep), c.at(stRepAck)) {
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
	// Dekker with the primary: a handler leaving the wait lowers the
	// count before it reads the word, this reads the count after moving
	// the word, so one of the two sees the other.
	if s.Serving != nil && atomic.LoadUint32(s.Region.ServingWord()) != 0 {
		return s.Serving.Ring()
	}
	return s.Primary.Ring()
}

// await waits until the claimed slot leaves state st (and the primary's
// transient replying state) and returns the new state. A state of another
// claim, or a region no longer current, is ErrLost.
func (s *Sender) await(c claim, bell Bell, st uint32, deadline time.Time) (uint32, error) {
	state := s.Region.slotState(c.i)
	lastCheck := time.Now()
	// The first checks come soon, then every CheckEvery: a primary that
	// has just died should be replaced at once, and one that answers in
	// time is never checked.
	every := time.Millisecond
	spinUntil := lastCheck
	if !s.othersWaiting() {
		spinUntil = lastCheck.Add(spinFor)
	}
	for {
		v := atomic.LoadUint64(state)
		cur, ok := c.owns(v)
		if !ok {
			return cur, ErrLost
		}
		if cur != st && cur != stReplying {
			return cur, nil
		}
		now := time.Now()
		if !now.Before(deadline) {
			return cur, ErrTimeout
		}
		if now.Sub(lastCheck) >= every {
			lastCheck, every = now, min(2*every, CheckEvery)
			if st != stWaiting && s.Serving != nil {
				// The primary has yet to act on this state: make sure it
				// was woken (see Serving).
				atomic.AddUint32(s.Region.BellWord(), 1)
				s.Primary.Ring()
			}
			err := ErrLost
			if s.Region.Current() {
				err = s.Check()
			}
			if err != nil {
				// v may predate an answer that the primary wrote just
				// before it left: that answer stands, and sending again
				// would deliver the message twice.
				if later, ok := c.owns(atomic.LoadUint64(state)); ok && later != st && later != stReplying {
					return later, nil
				}
				return cur, err
			}
		}
		if now.Before(spinUntil) {
			// The primary usually answers within tens of microseconds:
			// looking again is cheaper than sleeping in the kernel and
			// being woken. Without yielding: runtime.Gosched wakes an
			// idle thread to look for work, on the processor that the
			// primary is about to run on (7 µs of a 55 µs handoff here).
			continue
		}
		if err := bell.Wait(uint32(v), min(deadline.Sub(now), lastCheck.Add(every).Sub(now))); err != nil {
			return cur, err
		}
	}
}

// othersWaiting reports whether a sender of another process holds a slot.
// The primary then has other messages to serve first, and a sender sleeps
// at once rather than spin for its answer: the spin would keep a
// processor from the primary and that sender. (The slots of its own
// process do not count: their goroutines run on its other processors, or
// on this one once the spin ends.)
func (s *Sender) othersWaiting() bool {
	for i := range s.Region.layout.Slots {
		pid, _, st := parts(atomic.LoadUint64(s.Region.slotState(i)))
		if st != stFree && pid != uint32(s.PID) {
			return true
		}
	}
	return false
}

// claim takes a free slot, or one whose claimant has died.
func (s *Sender) claim(deadline time.Time) (claim, error) {
	r := s.Region
	slots := r.layout.Slots
	backoff := time.Millisecond
	for {
		for pass := range 2 {
			// The first free slot: slot 0's data begins in the page of the
			// header and the table, which a sender touches anyway.
			for i := range slots {
				state := r.slotState(i)
				v := atomic.LoadUint64(state)
				pid, seq, st := parts(v)
				// Second pass: also take over a slot whose claimant is gone.
				if st != stFree && (pass == 0 || !sendersTurn(st) || pid == 0 || s.Alive(int(pid))) {
					continue
				}
				c := claim{i: i, pid: uint32(s.PID), seq: (seq + 1) & seqMask}
				if !atomic.CompareAndSwapUint64(state, v, c.at(stWriting)) {
					continue
				}
				if !r.Current() {
					// A new primary re-initialised the region under us.
					s.abandon(c)
					return claim{}, ErrLost
				}
				return c, nil
			}
		}
		// Every slot is busy: more senders than slots. Wait for one to
		// free up, re-checking the primary as in any other wait.
		if !time.Now().Before(deadline) {
			return claim{}, fmt.Errorf("%w: all %d slots busy", ErrTimeout, slots)
		}
		if !r.Current() {
			return claim{}, ErrLost
		}
		if err := s.Check(); err != nil {
			return claim{}, err
		}
		time.Sleep(min(backoff, time.Until(deadline)))
		backoff = min(2*backoff, 20*time.Millisecond)
	}
}

// abandonWait bounds how long abandon waits for a primary to finish
// writing into the slot.
const abandonWait = 100 * time.Millisecond

// testHookAbandonWaits, if set, is called each time abandon waits.
var testHookAbandonWaits func()

// abandon frees a slot this sender holds, after a failure, revoked ones
// included. A slot the primary is writing into is left until it has
// finished (a bounded copy), for abandonWait at most: the bound is a time,
// not a count of sleeps, each of which may last a millisecond, not the
// tenth asked for.
func (s *Sender) abandon(c claim) {
	state := s.Region.slotState(c.i)
	for end := time.Now().Add(abandonWait); time.Now().Before(end); {
		v := atomic.LoadUint64(state)
		st, ok := c.owns(v)
		if !ok {
			return
		}
		if st == stReplying {
			if testHookAbandonWaits != nil {
				testHookAbandonWaits()
			}
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if atomic.CompareAndSwapUint64(state, v, mk(0, c.seq, stFree)) {
			return
		}
	}
}

// sendersTurn reports whether a slot in state st waits on its sender. Only
// such slots are reclaimed from a claimant that seems dead: every other
// state moves on by the primary's hand and then waits on the sender.
func sendersTurn(st uint32) bool {
	return st == stWriting || st == stReqAck || st == stRep || st == stTooLarge || st == stRevoked
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
	seen  uint64    // last state seen
	since time.Time // when it was first seen
	phase int
	claim claim // the claim being served, outside phaseIdle
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
		state := rc.r.slotState(i)
		v := atomic.LoadUint64(state)
		pid, seq, st := parts(v)
		c := claim{i: i, pid: pid, seq: seq}
		if ls.phase != phaseIdle {
			if _, ok := ls.claim.owns(v); !ok {
				ls.reset()
			}
		}
		switch st {
		case stReq:
			in, ok := rc.take(c)
			if !ok {
				refused++
			} else if in != nil {
				done = append(done, *in)
			}
		case stRepAck:
			if ls.phase == phaseReplying && ls.claim == c {
				rc.sendChunk(i, stRepAck)
			}
		case stWriting, stReqAck, stRep, stTooLarge, stRevoked:
			rc.reapIfDead(i, v, now)
			continue
		}
		ls.seen, ls.since = atomic.LoadUint64(state), now
	}
	return done, refused
}

// reapIfDead frees a slot that has waited on its sender for staleAfter and
// whose claimant no longer runs, dropping any partial message.
func (rc *Receiver) reapIfDead(i int, v uint64, now time.Time) {
	ls := &rc.slots[i]
	if ls.seen != v {
		ls.seen, ls.since = v, now
		return
	}
	if now.Sub(ls.since) < staleAfter {
		return
	}
	ls.since = now
	pid, seq, _ := parts(v)
	if pid != 0 && !rc.alive(int(pid)) && atomic.CompareAndSwapUint64(rc.r.slotState(i), v, mk(0, seq, stFree)) {
		ls.reset()
	}
}

// take copies a request chunk out of the slot of claim c. ok is false when
// the chunk was refused (and the slot freed, or marked too large, so that
// its sender stops).
func (rc *Receiver) take(c claim) (in *Incoming, ok bool) {
	r := rc.r
	i := c.i
	ls := &rc.slots[i]
	state := r.slotState(i)
	n := int(atomic.LoadUint32(r.slotU32(i, offN)))
	flags := atomic.LoadUint32(r.slotU32(i, offFlags))
	crc := atomic.LoadUint32(r.slotU32(i, offCRC))
	data := r.slotData(i)
	refuse := func(to uint64) (*Incoming, bool) {
		ls.reset()
		if atomic.CompareAndSwapUint64(state, c.at(stReq), to) {
			rc.wake(i)
		}
		return nil, false
	}
	var total uint64
	if flags&flagFirst != 0 {
		total = atomic.LoadUint64(r.slotU64(i, offTotal))
		if total > uint64(rc.max) {
			return refuse(c.at(stTooLarge))
		}
		ls.reset()
		ls.phase, ls.claim, ls.total = phaseReceiving, c, int(total)
		ls.buf = make([]byte, 0, min(int(total), 1<<20))
	} else if ls.phase != phaseReceiving || ls.claim != c {
		return refuse(mk(0, c.seq, stFree))
	}
	if n > len(data) || len(ls.buf)+n > ls.total {
		return refuse(mk(0, c.seq, stFree))
	}
	start := len(ls.buf)
	ls.buf = append(ls.buf, data[:n]...)
	last := flags&flagLast != 0
	if chunkCRC(c.seq, uint32(n), flags, total, ls.buf[start:]) != crc ||
		last && len(ls.buf) != ls.total || !last && n == 0 {
		return refuse(mk(0, c.seq, stFree))
	}
	next := stReqAck
	if last {
		next = stWaiting
	}
	if !atomic.CompareAndSwapUint64(state, c.at(stReq), c.at(next)) {
		ls.reset() // the sender gave up meanwhile
		return nil, true
	}
	if !last {
		rc.wake(i)
		return nil, true
	}
	// A whole message: its sender has nothing to do until the reply, which
	// wakes it, so it is not woken now (a system call saved on the way to
	// the handler).
	in = &Incoming{Slot: i, PID: int(c.pid), Data: ls.buf, seq: c.seq}
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
	if ls.phase != phaseWaiting || ls.claim != (claim{i: in.Slot, pid: uint32(in.PID), seq: in.seq}) {
		return ErrLost
	}
	ls.phase, ls.rest, ls.first = phaseReplying, data, true
	return rc.sendChunk(in.Slot, stWaiting)
}

func (rc *Receiver) sendChunk(i int, from uint32) error {
	r := rc.r
	ls := &rc.slots[i]
	c := ls.claim
	state := r.slotState(i)
	if !atomic.CompareAndSwapUint64(state, c.at(from), c.at(stReplying)) {
		ls.reset()
		return ErrLost
	}
	data := r.slotData(i)
	n := copy(data, ls.rest)
	src := ls.rest[:n]
	flags := uint32(0)
	total := uint64(len(ls.rest))
	if ls.first {
		flags |= flagFirst
		atomic.StoreUint64(r.slotU64(i, offTotal), total)
	}
	ls.rest, ls.first = ls.rest[n:], false
	last := len(ls.rest) == 0
	if last {
		flags |= flagLast
	}
	atomic.StoreUint32(r.slotU32(i, offN), uint32(n))
	atomic.StoreUint32(r.slotU32(i, offCRC), chunkCRC(c.seq, uint32(n), flags, total, src))
	atomic.StoreUint32(r.slotU32(i, offFlags), flags)
	ok := atomic.CompareAndSwapUint64(state, c.at(stReplying), c.at(stRep))
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
