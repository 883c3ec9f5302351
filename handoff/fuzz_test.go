package handoff_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"testing"
	"unsafe"

	"github.com/go-instance/instance/handoff"
)

// alignedCopy returns a copy of b in 8-byte-aligned memory, as a mapping
// would be.
func alignedCopy(b []byte) []byte {
	if len(b) == 0 {
		return []byte{}
	}
	words := make([]uint64, (len(b)+7)/8)
	out := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(b))
	copy(out, b)
	return out
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range []handoff.Message{
		{},
		{Args: []string{"--new-window", "file.txt"}, Dir: "/home/u", PID: 1234, Time: 1700000000000000000},
		{Args: []string{"", "\xff\xfe"}, Env: []handoff.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: ""}}, Data: []byte{0, 1, 2}},
		{Env: []handoff.EnvVar{{Name: "", Value: ""}}, PID: -1, Time: math.MinInt64},
		{Args: []string{"x", "y", "z", "w"}, Data: bytes.Repeat([]byte("data"), 100)},
	} {
		b, err := m.Encode(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(append(bytes.Clone(b), 0))
	}
	f.Add([]byte(nil))
	f.Add([]byte{1, 2, 3})
	f.Add(bytes.Repeat([]byte{0xff}, 40))
	f.Add(binary.LittleEndian.AppendUint32(nil, math.MaxUint32))
	f.Add(make([]byte, 28)) // the smallest message, all zero: valid

	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		m, err := handoff.DecodeMessage(b)
		if !bytes.Equal(in, b) {
			t.Fatal("DecodeMessage modified its input")
		}
		if err != nil {
			if !errors.Is(err, handoff.ErrMalformed) {
				t.Fatalf("DecodeMessage: %v, want ErrMalformed", err)
			}
			if m != nil {
				t.Fatal("DecodeMessage returned a message and an error")
			}
			return
		}
		if n := m.EncodedSize(); n != len(b) {
			t.Fatalf("decoded %d bytes into a message whose EncodedSize is %d", len(b), n)
		}
		enc, err := m.Encode(nil)
		if err != nil {
			t.Fatalf("Encode of a decoded message: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("round trip differs:\n in % x\nout % x", b, enc)
		}
	})
}

func FuzzAttach(f *testing.F) {
	seed := func(l handoff.Layout, mutate func(b []byte)) {
		b := alignedCopy(make([]byte, l.Size()))
		if _, err := handoff.Init(b, l, handoff.Owner{PID: 100, Start: 200}, 7, 1); err != nil {
			f.Fatal(err)
		}
		if mutate != nil {
			mutate(b)
		}
		f.Add(bytes.Clone(b))
	}
	put32 := func(off int, v uint32) func([]byte) {
		return func(b []byte) { binary.NativeEndian.PutUint32(b[off:], v) }
	}
	put64 := func(off int, v uint64) func([]byte) {
		return func(b []byte) { binary.NativeEndian.PutUint64(b[off:], v) }
	}
	small := handoff.Layout{Slots: 1, SlotData: handoff.MinSlotData}
	two := handoff.Layout{Slots: 2, SlotData: handoff.MinSlotData}
	seed(small, nil)
	seed(two, nil)
	seed(small, put64(0, 0))                       // magic
	seed(small, put32(8, handoff.Version+1))       // version
	seed(small, put32(12, 1))                      // state: initialising
	seed(small, put32(12, 3))                      // state: closed
	seed(small, put64(16, uint64(small.Size()+8))) // size
	seed(small, put32(24, 0))                      // slots
	seed(small, put32(24, 2))                      // slots, size unchanged
	seed(small, put32(24, math.MaxUint32))         // slots
	seed(small, put32(28, handoff.MinSlotData+1))  // slot data
	seed(small, put32(28, math.MaxUint32))         // slot data
	seed(two, put32(handoff.HeaderSize+8, 1000))   // slot 0: N out of bounds
	seed(two, put32(handoff.HeaderSize, 2|1<<4))   // slot 0: a request, flags 0
	request := func(crc uint32) func([]byte) {
		// Slot 1 holds a whole request of 5 bytes.
		return func(b []byte) {
			base := handoff.HeaderSize + 32
			data := handoff.HeaderSize + 2*32 + two.SlotData
			binary.NativeEndian.PutUint32(b[base:], 1<<4|2) // sequence 1, request
			binary.NativeEndian.PutUint32(b[base+4:], 4242) // PID
			binary.NativeEndian.PutUint32(b[base+8:], 5)    // N
			binary.NativeEndian.PutUint32(b[base+12:], 3)   // first and last
			binary.NativeEndian.PutUint64(b[base+16:], 5)   // total
			binary.NativeEndian.PutUint32(b[base+24:], crc)
			copy(b[data:], "hello")
		}
	}
	good := crc32.Checksum([]byte("hello"), crc32.MakeTable(crc32.Castagnoli))
	seed(two, request(good))
	seed(two, request(good+1))
	f.Add([]byte{})
	f.Add(make([]byte, handoff.HeaderSize))

	f.Fuzz(func(t *testing.T, in []byte) {
		b := alignedCopy(in)
		r, err := handoff.Attach(b)
		if err != nil {
			if !errors.Is(err, handoff.ErrNotReady) && !errors.Is(err, handoff.ErrIncompatible) {
				t.Fatalf("Attach: %v, want ErrNotReady or ErrIncompatible", err)
			}
			return
		}
		l := r.Layout()
		if l.Size() != len(b) {
			t.Fatalf("Attach of %d bytes gave layout %+v of %d bytes", len(b), l, l.Size())
		}
		if l.Slots < 1 || l.Slots > handoff.MaxSlots || l.SlotData < handoff.MinSlotData || l.SlotData > handoff.MaxSlotData || l.SlotData%64 != 0 {
			t.Fatalf("Attach accepted layout %+v", l)
		}
		if !r.HeaderIntact() || !r.Current() {
			t.Fatal("a region just attached is not intact and current")
		}
		// Whatever the slots hold, the primary's side must not fault on it.
		rc := handoff.NewReceiver(r, 1<<16, func(int) {}, func(int) bool { return true })
		done, _ := rc.Poll()
		for _, in := range done {
			if in.Slot < 0 || in.Slot >= l.Slots || len(in.Data) > 1<<16 {
				t.Fatalf("Poll returned %d bytes from slot %d", len(in.Data), in.Slot)
			}
			rc.Reply(in, []byte("reply"))
		}
		rc.Poll()
	})
}
