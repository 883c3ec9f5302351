// Package handoff is the wire of an instance: the layout of the shared
// region, the mailbox protocol between secondaries and the primary, and the
// encoding of messages and replies.
//
// It works on a []byte (normally a shared mapping) and makes no system
// calls: wake-ups are supplied by the caller as [Bell] values. It is the only
// package that knows byte offsets. Everything read from the region is
// treated as untrusted input and bounds-checked.
//
// # Region layout
//
// A 128-byte header (magic, protocol version, state, size, slot geometry,
// generation, owner PID and start time, doorbell kind and doorbell word,
// and the count of the primary's handlers waiting on that word) is
// followed by a table of 32-byte slot control blocks, then by each
// slot's data area, through which one message, and then its reply, stream
// in chunks. The header, the table and the start of slot 0's data share
// the first page (of the default layout), and senders take the first free
// slot: a lone sender of a small message touches that one page. All
// multi-byte fields are in the machine's byte order: the region never
// leaves the machine.
package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Magic identifies an instance region; Version is the protocol version.
// A region with the magic and another version belongs to an incompatible
// peer.
const (
	Magic   uint64 = 0x31564e4954534e49 // "INSTINV1", little-endian
	Version uint32 = 3
)

// Header and slot geometry.
const (
	HeaderSize = 128
	slotCtl    = 32

	MinSlotData = 256
	MaxSlotData = 1 << 20
	MaxSlots    = 1024
)

// Header field offsets.
const (
	offMagic      = 0
	offVersion    = 8
	offState      = 12
	offSize       = 16
	offSlots      = 24
	offSlotData   = 28
	offGeneration = 32
	offOwnerPID   = 40
	offOwnerStart = 48
	offBellKind   = 56
	offBell       = 60
	offServing    = 64 // written by the primary; see Sender.Serving
)

// Slot control offsets.
const (
	offSlotState = 0 // 64 bits: PID, claim sequence, state (see mailbox.go)
	offN         = 8
	offFlags     = 12
	offTotal     = 16
	offCRC       = 24 // CRC-32C of the chunk, so a chunk scribbled on by a stale sender is refused
)

// Region states, in the header's state word.
const (
	stateEmpty uint32 = iota
	stateInitialising
	stateReady
	stateClosed
)

// Errors reported by this package.
var (
	// ErrNotReady: the region is missing, still being initialised, closed
	// by its primary, or unrecognisable. The caller re-checks ownership and
	// retries.
	ErrNotReady = errors.New("handoff: region not ready")
	// ErrIncompatible: the region was written by another protocol version.
	ErrIncompatible = errors.New("handoff: incompatible protocol version")
	// ErrLost: the slot was reclaimed or the region re-initialised while a
	// message was in flight; the message was not delivered.
	ErrLost = errors.New("handoff: message lost its slot")
	// ErrTimeout: the deadline passed.
	ErrTimeout = errors.New("handoff: timeout")
	// ErrTooLarge: a message or reply is over the configured maximum.
	ErrTooLarge = errors.New("handoff: message too large")
	// ErrMalformed: bytes that do not decode.
	ErrMalformed = errors.New("handoff: malformed message")
	// ErrPrimaryGone, from a Sender's Check (wrapped), says that the
	// primary is gone and that the caller takes its place, and so will
	// reset the region: the sender leaves its slot as it is, rather than
	// wait for a reply in progress that nobody will finish.
	ErrPrimaryGone = errors.New("handoff: primary gone")
)

// Layout is the geometry of a region: how many messages can be in flight at
// once, and how many bytes of a message move per round trip.
type Layout struct {
	Slots    int
	SlotData int
}

// DefaultLayout takes 64 concurrent senders in 16 KiB chunks: about 1 MiB,
// of which only touched pages use memory.
var DefaultLayout = Layout{Slots: 64, SlotData: 16 << 10}

// dataStart is the offset of slot 0's data, right after the table (a
// multiple of 32; the slot data sizes are multiples of 64).
func (l Layout) dataStart() int { return HeaderSize + l.Slots*slotCtl }

// Size is the region size in bytes for the layout.
func (l Layout) Size() int { return l.dataStart() + l.Slots*l.SlotData }

func (l Layout) validate() error {
	if l.Slots < 1 || l.Slots > MaxSlots {
		return fmt.Errorf("handoff: %d slots, want 1 to %d", l.Slots, MaxSlots)
	}
	if l.SlotData < MinSlotData || l.SlotData > MaxSlotData || l.SlotData%64 != 0 {
		return fmt.Errorf("handoff: slot data size %d, want a multiple of 64 from %d to %d", l.SlotData, MinSlotData, MaxSlotData)
	}
	return nil
}

// Owner describes the primary that initialised a region.
type Owner struct {
	PID   int
	Start int64 // process start, Unix nanoseconds
}

// Region is a view of an initialised region. Its geometry is copied out of
// the header when the view is made, so later writes to the header cannot
// move a bounds check.
type Region struct {
	b        []byte
	layout   Layout
	gen      uint64
	bellKind uint32
}

// Init lays out a fresh region over b (len(b) must be l.Size()) for the
// given owner and generation. Other processes see it only once it is
// complete: the state word goes to ready last.
func Init(b []byte, l Layout, owner Owner, gen uint64, bellKind uint32) (*Region, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	if len(b) != l.Size() {
		return nil, fmt.Errorf("handoff: region is %d bytes, layout needs %d", len(b), l.Size())
	}
	if err := aligned(b); err != nil {
		return nil, err
	}
	r := &Region{b: b, layout: l, gen: gen, bellKind: bellKind}
	atomic.StoreUint32(r.u32(offState), stateInitialising)
	atomic.StoreUint64(r.u64(offMagic), Magic)
	atomic.StoreUint32(r.u32(offVersion), Version)
	atomic.StoreUint64(r.u64(offSize), uint64(len(b)))
	atomic.StoreUint32(r.u32(offSlots), uint32(l.Slots))
	atomic.StoreUint32(r.u32(offSlotData), uint32(l.SlotData))
	atomic.StoreUint64(r.u64(offGeneration), gen)
	atomic.StoreUint64(r.u64(offOwnerPID), uint64(owner.PID))
	atomic.StoreUint64(r.u64(offOwnerStart), uint64(owner.Start))
	atomic.StoreUint32(r.u32(offBellKind), bellKind)
	atomic.StoreUint32(r.u32(offServing), 0)
	for i := range l.Slots {
		// Free each slot with a new sequence number, so that a claim of the
		// old generation never matches one of the new, even one made while
		// this runs: compare-and-swap, not a plain store over it. Slots
		// whose sender may still touch their data are revoked, not freed
		// (see mailbox.go). Every claim carries its sender's PID: a slot
		// without one is damage, and is freed.
		v := r.slotState(i)
		for {
			old := atomic.LoadUint64(v)
			pid, seq, st := parts(old)
			next := mk(0, seq+1, stFree)
			switch {
			case pid == 0:
			case st == stRevoked:
				// Its sender has yet to let go.
				next = old
			case st == stRep && atomic.LoadUint32(r.slotU32(i, offFlags))&flagLast != 0:
				// A whole reply that the previous primary wrote before it
				// left: its sender takes it and frees the slot (or, if the
				// sender died, the receiver reaps it). Freeing it here
				// would make the sender send again: a second delivery.
				next = old
			case st == stWriting, st == stReqAck, st == stRep:
				// Its sender may be about to copy a chunk in, or out.
				next = mk(pid, seq, stRevoked)
			}
			// Where next is old, this checks that the slot did not move
			// while its flags were read.
			if atomic.CompareAndSwapUint64(v, old, next) {
				break
			}
		}
	}
	atomic.StoreUint32(r.u32(offState), stateReady)
	return r, nil
}

// PreviousGeneration returns the generation recorded in b if b holds a
// region header of this protocol, so that a new primary can pick a later
// one.
func PreviousGeneration(b []byte) (uint64, bool) {
	if len(b) < HeaderSize || aligned(b) != nil {
		return 0, false
	}
	r := &Region{b: b}
	if atomic.LoadUint64(r.u64(offMagic)) != Magic || atomic.LoadUint32(r.u32(offVersion)) != Version {
		return 0, false
	}
	return atomic.LoadUint64(r.u64(offGeneration)), true
}

// Attach validates the header in b and returns a view of it.
func Attach(b []byte) (*Region, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrNotReady, len(b))
	}
	if err := aligned(b); err != nil {
		return nil, err
	}
	r := &Region{b: b}
	if m := atomic.LoadUint64(r.u64(offMagic)); m != Magic {
		return nil, fmt.Errorf("%w: bad magic %#x", ErrNotReady, m)
	}
	if v := atomic.LoadUint32(r.u32(offVersion)); v != Version {
		return nil, fmt.Errorf("%w: peer speaks version %d, this is version %d", ErrIncompatible, v, Version)
	}
	if s := atomic.LoadUint32(r.u32(offState)); s != stateReady {
		return nil, fmt.Errorf("%w: state %d", ErrNotReady, s)
	}
	r.gen = atomic.LoadUint64(r.u64(offGeneration))
	r.bellKind = atomic.LoadUint32(r.u32(offBellKind))
	r.layout = Layout{
		Slots:    int(atomic.LoadUint32(r.u32(offSlots))),
		SlotData: int(atomic.LoadUint32(r.u32(offSlotData))),
	}
	if err := r.layout.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotReady, err)
	}
	if size := atomic.LoadUint64(r.u64(offSize)); size != uint64(len(b)) || r.layout.Size() != len(b) {
		return nil, fmt.Errorf("%w: header says %d bytes for %d slots of %d, mapping has %d",
			ErrNotReady, size, r.layout.Slots, r.layout.SlotData, len(b))
	}
	return r, nil
}

func aligned(b []byte) error {
	if uintptr(unsafe.Pointer(unsafe.SliceData(b)))%8 != 0 {
		return errors.New("handoff: region is not 8-byte aligned")
	}
	return nil
}

// Layout returns the region's geometry.
func (r *Region) Layout() Layout { return r.layout }

// Generation is the generation this view was made for.
func (r *Region) Generation() uint64 { return r.gen }

// Current reports whether the region is still ready and of this view's
// generation: false once its primary has closed it or a new primary has
// re-initialised it.
func (r *Region) Current() bool {
	return atomic.LoadUint32(r.u32(offState)) == stateReady &&
		atomic.LoadUint64(r.u64(offGeneration)) == r.gen &&
		atomic.LoadUint64(r.u64(offMagic)) == Magic
}

// Close marks the region closed, so that waiting senders retry.
func (r *Region) Close() { atomic.StoreUint32(r.u32(offState), stateClosed) }

// Owner returns the primary recorded in the header.
func (r *Region) Owner() Owner {
	return Owner{
		PID:   int(atomic.LoadUint64(r.u64(offOwnerPID))),
		Start: int64(atomic.LoadUint64(r.u64(offOwnerStart))),
	}
}

// BellKind is the doorbell mechanism the primary chose.
func (r *Region) BellKind() uint32 { return r.bellKind }

// BellWord is the primary's doorbell word: senders increment it and ring.
func (r *Region) BellWord() *uint32 { return r.u32(offBell) }

// ServingWord counts the primary's handlers that wait on the doorbell
// word themselves: the primary keeps it, senders read it (see
// Sender.Serving).
func (r *Region) ServingWord() *uint32 { return r.u32(offServing) }

// BellWordOf returns the doorbell word of the region in b, whether or not
// its header is valid, or nil if b is too short or misaligned: a sender
// rings it to wake a primary whose header was damaged.
func BellWordOf(b []byte) *uint32 {
	if len(b) < HeaderSize || aligned(b) != nil {
		return nil
	}
	return (&Region{b: b}).u32(offBell)
}

// SlotWord is the 32-bit half of slot i's state that changes with every
// transition: its sender waits on it.
func (r *Region) SlotWord(i int) *uint32 { return r.u32(r.slotBase(i) + offSlotState + lowHalf) }

// lowHalf is the offset of the low 32 bits within a 64-bit word.
var lowHalf = func() int {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return 0
	}
	return 4
}()

// HeaderIntact reports whether the header still says what Init wrote, for a
// primary that checks for tampering.
func (r *Region) HeaderIntact() bool {
	return r.Current() &&
		atomic.LoadUint32(r.u32(offVersion)) == Version &&
		atomic.LoadUint64(r.u64(offSize)) == uint64(len(r.b)) &&
		atomic.LoadUint32(r.u32(offSlots)) == uint32(r.layout.Slots) &&
		atomic.LoadUint32(r.u32(offSlotData)) == uint32(r.layout.SlotData) &&
		atomic.LoadUint32(r.u32(offBellKind)) == r.bellKind
}

// Probe reads the region's last word. Where the region is a file that was
// shrunk under the mapping, that faults (for the caller to catch): the
// header and the slot table, all that an idle primary reads, are at the
// front and would not.
func (r *Region) Probe() { atomic.LoadUint32(r.u32(len(r.b) - 4)) }

func (r *Region) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&r.b[off])) }
func (r *Region) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&r.b[off])) }

func (r *Region) slotBase(i int) int { return HeaderSize + i*slotCtl }

func (r *Region) slotState(i int) *uint64    { return r.u64(r.slotBase(i) + offSlotState) }
func (r *Region) slotU32(i, off int) *uint32 { return r.u32(r.slotBase(i) + off) }
func (r *Region) slotU64(i, off int) *uint64 { return r.u64(r.slotBase(i) + off) }
func (r *Region) slotData(i int) []byte {
	base := r.layout.dataStart() + i*r.layout.SlotData
	return r.b[base : base+r.layout.SlotData : base+r.layout.SlotData]
}
